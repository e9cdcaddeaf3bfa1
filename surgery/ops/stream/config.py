"""The config rewrite: a walk over each level of the model graph that classifies every tensor
(plan.SEQ / STEP / STATIC / STATE), turns per-step layers into per-timestep ones, fixes masked
calls and refuses layers that look across time; `step_config` and `sequence_config`.
"""

from __future__ import annotations

import copy
import math


from surgery.graph import registry
from surgery.errors import NotSupportedError, UsageError
from surgery.graph.level import Level, dialect_for, is_model_entry, top_level_entry
from surgery.graph.rewire import rewire_states
from surgery.graph.sites import find_sites
from surgery.ops.stream.plan import (
    SEQ,
    STATE,
    STATIC,
    STEP,
    StreamPlan,
    UNROLL_MAX_STEPS,
    ACROSS_TIME,
    AXIS_LAYERS,
    WalkContext,
    ELEMENTWISE_OPS,
    MERGE_LAYERS,
    RANK_AGNOSTIC,
    REDUCE_OPS,
    SEQUENCE_PER_STEP,
    is_declared_per_step,
    rank_of,
    ref_list,
    refuse_error,
    replace_refs,
    where_text,
)


class _LevelStream:
    """Classifies the tensors of one level and edits it into a step level, in place."""

    def __init__(self, level: Level, context: WalkContext, path: tuple):
        self.level = level
        self.dialect = level.dialect
        self.context = context
        self.path = path
        self.kinds: dict[tuple, object] = {}  # (layer, call) -> kind, or {index: kind}
        self.layer_mode: dict[str, str] = {}  # layer -> "as-is" | "wrap" (must agree across calls)
        self.fixes: list = []  # masked recurrent calls to fix after the walk

    # -- kinds ---------------------------------------------------------------------------------
    def kind(self, ref: tuple) -> str | None:
        value = self.kinds.get((ref[0], ref[1]))
        if isinstance(value, dict):
            return value.get(ref[2], value.get("*"))
        return value

    def tensors(self, value) -> list[dict]:
        return list(self.dialect.iter_tensors(value))

    # -- the walk ------------------------------------------------------------------------------
    def run(self, input_kinds: list[str]) -> list[str]:
        level = self.level
        inputs = ref_list(level.config["input_layers"])
        if len(input_kinds) != len(inputs):
            raise NotSupportedError(
                f"model {where_text(self.path, level.name)!r} is called with {len(input_kinds)} inputs "
                f"but declares {len(inputs)}"
            )
        for ref, kind in zip(inputs, input_kinds):
            self.kinds[(ref[0], ref[1])] = kind
            if kind == SEQ:
                self._set_input_time(level.layer(ref[0]))
        pending = [(entry, index) for entry in level.layers if entry.get("class_name") != "InputLayer"
                   for index in range(len(entry.get("inbound_nodes", [])))]
        while pending:
            waiting = []
            for entry, index in pending:
                node = entry["inbound_nodes"][index]
                refs = [self.dialect.ref_of(t) for t in self.tensors(node)]
                if all(self.kind(ref) is not None for ref in refs):
                    self.kinds[(Level.name_of(entry), index)] = self.classify(entry, index, node)
                else:
                    waiting.append((entry, index))
            if len(waiting) == len(pending):
                names = ", ".join(sorted({Level.name_of(e) for e, _ in waiting}))
                raise NotSupportedError(f"cannot order the layers of {level.name!r} for streaming: {names}")
            pending = waiting
        for fix in self.fixes if not self.context.relax else []:
            self._fix_masked_call(*fix)
        out_kinds = [self.kind(ref) for ref in ref_list(level.config["output_layers"])]
        self.finish()
        return out_kinds

    def _set_input_time(self, entry: dict) -> None:
        shape = list(self.dialect.input_layer_shape(entry) or [])
        if len(shape) < 2:
            raise refuse_error(self.path, entry, f"a sequence input needs a time axis, its shape is {tuple(shape)!r}")
        shape[1] = self.context.steps
        entry["config"]["batch_shape"] = shape
        entry["config"].pop("batch_input_shape", None)

    def classify(self, entry: dict, index: int, node: dict):
        class_name = entry.get("class_name")
        if is_model_entry(entry):
            return self._nested(entry, index, node)
        if registry.is_recurrent(entry):
            return self._recurrent(entry, index, node)
        # The mask a layer is given follows its input; the other tensors are its arguments.
        mask = self.dialect.get_kwarg(node, "mask")
        mask_ids = {id(t) for t in self.tensors(mask)} if mask is not None else set()
        arg_kinds = [self.kind(self.dialect.ref_of(t)) for t in self.tensors(node) if id(t) not in mask_ids]
        mask_kinds = {self.kind(self.dialect.ref_of(t)) for t in self.tensors(mask)} if mask is not None else set()
        if mask_kinds - {SEQ, STATIC} or (SEQ in mask_kinds and SEQ not in arg_kinds):
            raise refuse_error(self.path, entry, "its mask and its input do not share a time axis")
        timed = {k for k in arg_kinds if k in (SEQ, STEP)}
        if STATE in arg_kinds:
            if class_name == "Identity" and len(arg_kinds) == 1:
                return STATE
            source = next(self.dialect.ref_of(t)[0] for t in self.tensors(node)
                          if self.kind(self.dialect.ref_of(t)) == STATE)
            raise refuse_error(self.path, entry, f"it uses the final state of {source!r}, which a step model only "
                                            "has once per call (the states are carried as state outputs)")
        if not timed:
            return STATIC
        if len(timed) > 1:
            raise refuse_error(self.path, entry, "it combines a sequence with the per-step output of a recurrent "
                                            "layer that returns only its last step")
        kind = timed.pop()
        if STATIC in arg_kinds:
            static = [self.dialect.ref_of(t)[0] for t in self.tensors(node)
                      if self.kind(self.dialect.ref_of(t)) == STATIC]
            raise refuse_error(self.path, entry, f"it combines per-timestep values with {static[0]!r}, which has no "
                                            "time axis")
        module = entry.get("module") or ""
        if module.startswith(("keras.src.ops", "keras.ops")):
            return self._op(entry, node, kind)
        if class_name in ACROSS_TIME and (kind == SEQ or class_name == "RepeatVector"):
            raise refuse_error(self.path, entry, ACROSS_TIME[class_name])
        if class_name in MERGE_LAYERS:
            return self._merge(entry, node, kind)
        if kind == SEQ and is_declared_per_step(entry):  # the user said so (--per-step)
            self._mode(entry, "as-is")
            return SEQ
        if len(arg_kinds) != 1:
            raise refuse_error(self.path, entry, "a layer with several inputs that is not known to act on each time "
                                            "step separately")
        if kind == SEQ:
            return self._sequence_layer(entry, node)
        return self._step_layer(entry)

    # -- layer rules ---------------------------------------------------------------------------
    def _mode(self, entry: dict, mode: str) -> None:
        name = Level.name_of(entry)
        previous = self.layer_mode.setdefault(name, mode)
        if previous != mode:
            raise refuse_error(self.path, entry, "it is shared between a sequence and the per-step output of a "
                                            "recurrent layer that returns only its last step")

    def _sequence_layer(self, entry: dict, node: dict) -> str:
        class_name = entry.get("class_name")
        rank = rank_of(self.dialect, self.dialect.first_input(node))
        if class_name in SEQUENCE_PER_STEP:
            self._mode(entry, "as-is")
            return SEQ
        if class_name in AXIS_LAYERS:
            axes = entry["config"].get(AXIS_LAYERS[class_name], -1)
            for axis in axes if isinstance(axes, (list, tuple)) else [axes]:
                if axis is None or (rank is not None and axis % rank in (0, 1)) or axis in (0, 1):
                    raise refuse_error(self.path, entry, f"it normalizes over axis {axis!r}, which includes the time axis")
            self._mode(entry, "as-is")
            return SEQ
        if class_name == "Reshape":
            return self._sequence_reshape(entry, node)
        if class_name == "Permute":
            dims = list(entry["config"].get("dims", []))
            if not dims or dims[0] != 1:
                raise refuse_error(self.path, entry, f"it moves the time axis (dims {tuple(dims)!r})")
            self._mode(entry, "as-is")
            return SEQ
        raise refuse_error(self.path, entry, "it is not known to act on each time step separately "
                                        "(wrap per-step layers in TimeDistributed, or declare it: --per-step "
                                        f"{class_name})")

    def _sequence_reshape(self, entry: dict, node: dict) -> str:
        target = list(entry["config"].get("target_shape", []))
        shape = self.dialect.tensor_shape(self.dialect.first_input(node))
        step_shape = list(shape[2:]) if shape is not None else None
        per_step = (
            len(target) >= 1 and step_shape is not None and None not in step_shape
            and (target[0] == -1 or target[0] == shape[1])
            and -1 not in target[1:]
            and math.prod(target[1:]) == math.prod(step_shape)
        )
        if not per_step:
            raise refuse_error(self.path, entry, f"it is a fixed-length Reshape over time (target shape {tuple(target)!r} "
                                            f"from input shape {tuple(shape) if shape else None!r})")
        entry["config"]["target_shape"] = [self.context.steps if self.context.steps is not None else -1, *target[1:]]
        self._mode(entry, "as-is")
        return SEQ

    def _step_layer(self, entry: dict) -> str:
        """A layer applied to one step's value: rank-agnostic ones stay, the others are wrapped."""
        if entry.get("class_name") in RANK_AGNOSTIC:
            self._mode(entry, "as-is")
        else:
            self._mode(entry, "wrap")
        return STEP

    def _merge(self, entry: dict, node: dict, kind: str) -> str:
        if entry.get("class_name") == "Concatenate":
            axis = entry["config"].get("axis", -1)
            rank = rank_of(self.dialect, self.dialect.first_input(node))
            position = axis % rank if rank else axis
            if position == 0 or (kind == SEQ and position == 1):
                raise refuse_error(self.path, entry, f"it concatenates along axis {axis!r}, "
                                                f"the {'batch' if position == 0 else 'time'} axis")
            if kind == STEP and axis >= 0:
                self._mode(entry, f"axis:{axis + 1}")
                return kind
        self._mode(entry, "as-is")
        return kind

    def _op(self, entry: dict, node: dict, kind: str) -> str:
        class_name = entry.get("class_name")
        if class_name in ELEMENTWISE_OPS:
            return kind
        if class_name in REDUCE_OPS:
            axis = entry["config"].get("axis")
            rank = rank_of(self.dialect, self.dialect.first_input(node))
            axes = axis if isinstance(axis, (list, tuple)) else [axis]
            if any(a is None for a in axes):
                raise refuse_error(self.path, entry, "it reduces over every axis, the time axis included")
            positions = [a % rank if rank else a for a in axes]
            if kind == SEQ and any(p in (0, 1) for p in positions):
                raise refuse_error(self.path, entry, f"it works along axis {axis!r}, the time axis")
            if kind == STEP and not self.context.relax:
                if any(p == 0 for p in positions):
                    raise refuse_error(self.path, entry, f"it works along axis {axis!r}, the batch axis")
                moved = [a + 1 if a >= 0 else a for a in axes]
                entry["config"]["axis"] = moved if isinstance(axis, (list, tuple)) else moved[0]
            return kind
        raise refuse_error(self.path, entry, "an operation not known to act on each time step separately")

    def _recurrent(self, entry: dict, index: int, node: dict):
        inner = entry["config"]
        class_name = entry.get("class_name")
        if class_name in ACROSS_TIME:
            raise refuse_error(self.path, entry, ACROSS_TIME[class_name])
        if inner.get("go_backwards"):
            raise refuse_error(self.path, entry, "it has go_backwards=True: it reads the sequence from its end, so its "
                                            "output at a step depends on later steps")
        args = self.tensors(node.get("args", []))
        if not args:
            raise refuse_error(self.path, entry, "its call has no sequence argument")
        sequence_kind = self.kind(self.dialect.ref_of(args[0]))
        if sequence_kind != SEQ:
            raise refuse_error(self.path, entry, "it reads a tensor without a time axis "
                                            f"(from {self.dialect.ref_of(args[0])[0]!r})")
        mask = self.dialect.get_kwarg(node, "mask")
        mask_tensors = self.tensors(mask) if mask is not None else []
        if any(self.kind(self.dialect.ref_of(t)) != SEQ for t in mask_tensors):
            raise refuse_error(self.path, entry, "its mask has no time axis")
        name = Level.name_of(entry)
        if not inner.get("return_sequences"):
            if not inner.get("_stream_flipped"):
                self.context.per_step_sites.append(where_text(self.path, name))
            inner["_stream_flipped"] = True
        out_kind = SEQ if (inner.get("return_sequences") and not inner.get("_stream_flipped")) else STEP
        if mask_tensors:
            self.fixes.append((entry, index, node))
        kind = registry.layer_kind(entry)
        return {0: out_kind, "*": STATE} if kind.output_count(entry) == 1 else {"*": STATE}

    def _nested(self, entry: dict, index: int, node: dict) -> list:
        args = node.get("args", [])
        tensors = self.tensors(args[0] if args else [])
        kinds = [self.kind(self.dialect.ref_of(t)) for t in tensors]
        if STEP in kinds:
            raise refuse_error(self.path, entry, "a nested model applied to the per-step output of a recurrent layer "
                                            "that returns only its last step is not supported")
        if STATE in kinds:
            raise refuse_error(self.path, entry, "it is given the final state of a recurrent layer")
        name = Level.name_of(entry)
        seen = entry.get("_stream_kinds")
        if seen is None:
            nested = Level(entry, self.dialect)
            out_kinds = _LevelStream(nested, self.context, (*self.path, name)).run(kinds)
            entry["_stream_kinds"] = {"in": kinds, "out": out_kinds}
        elif seen["in"] != kinds:
            raise refuse_error(self.path, entry, "it is shared between calls on inputs of different kinds "
                                            f"({seen['in']} and {kinds})")
        out_kinds = entry["_stream_kinds"]["out"]
        return {i: k for i, k in enumerate(out_kinds)} | {"*": STATIC}

    # -- edits ---------------------------------------------------------------------------------
    def _fix_masked_call(self, entry: dict, index: int, node: dict) -> None:
        """Masked steps at the start of a call repeat the incoming h, as the full sequence does."""
        dialect, level = self.dialect, self.level
        name = Level.name_of(entry)
        initial = dialect.get_kwarg(node, "initial_state")
        state_tensors = self.tensors(initial) if initial is not None else []
        if not state_tensors:
            return  # no carried state (cannot happen after rewiring)
        cells = registry.layer_kind(entry).cells(entry)
        offset = sum(len(registry.cell_kind(cell).roles) for _p, cell, _c in cells[:-1])
        h_in = state_tensors[offset]
        h_shape = tuple((dialect.tensor_shape(h_in) or (None, None))[1:])  # without the batch axis
        out_rank = len(h_shape) + 2  # (batch, time, *state)
        mask = copy.deepcopy(self.tensors(dialect.get_kwarg(node, "mask"))[0])
        h_in = copy.deepcopy(h_in)
        output_ref = (name, index, 0)
        steps = self.context.steps
        new_name = level.unique_name

        def add(class_name, module, base, args, extra=None):
            layer_name = new_name(f"{name}_{base}")
            level.add_layer({
                "module": module, "class_name": class_name, "config": {"name": layer_name, **(extra or {})},
                "registered_name": class_name, "name": layer_name,
                "inbound_nodes": [{"args": args, "kwargs": {}}],
            })
            return layer_name

        def t(ref_name, shape, dtype):
            return dialect.tensor((ref_name, 0, 0), shape, dtype)

        seen = mask
        if steps != 1:
            cast = add("Cast", "keras.src.ops.core", "stream_cast", [mask], {"dtype": "int32"})
            total = add("Cumsum", "keras.src.ops.numpy", "stream_cumsum", [t(cast, [None, steps], "int32")],
                        {"axis": 1, "dtype": None})
            seen = t(add("Greater", "keras.src.ops.numpy", "stream_seen", [t(total, [None, steps], "int32"), 0]),
                     [None, steps], "bool")
        for k in range(out_rank - 2):
            seen = t(add("ExpandDims", "keras.src.ops.numpy", "stream_seen_axis", [seen], {"axis": -1}),
                     [None, steps, *[1] * (k + 1)], "bool")
        h_step = t(add("ExpandDims", "keras.src.ops.numpy", "stream_h_in", [h_in], {"axis": 1}),
                   [None, 1, *h_shape], "float32")
        out = dialect.tensor(output_ref, [None, steps, *h_shape], "float32")
        fixed = add("Where", "keras.src.ops.numpy", "stream_output", [seen, out, h_step])
        # Everything that read the recurrent output now reads the fixed one.
        for other in level.layers:
            if Level.name_of(other) == fixed:
                continue
            for other_node in other.get("inbound_nodes", []):
                for tensor in self.tensors(other_node):
                    if dialect.ref_of(tensor) == output_ref:
                        tensor["config"]["keras_history"] = [fixed, 0, 0]
        level.config["output_layers"] = replace_refs(level.config["output_layers"], output_ref, (fixed, 0, 0))
        self.context.masked.append(where_text(self.path, name) + (f"__{index}" if index else ""))

    def finish(self) -> None:
        """Apply the per-layer decisions and drop recorded shapes that no longer hold."""
        for entry in self.level.layers:
            name = Level.name_of(entry)
            entry.pop("build_config", None)
            inner = entry.get("config", {})
            if self.context.relax:
                inner.pop("_stream_flipped", None)
                entry.pop("_stream_kinds", None)
                if registry.is_recurrent(entry):
                    inner["stateful"] = False
                continue
            if inner.pop("_stream_flipped", False):
                inner["return_sequences"] = True
            if registry.is_recurrent(entry):
                inner["unroll"] = bool(self.context.unroll)
            if is_model_entry(entry):
                entry.pop("_stream_kinds", None)
            mode = self.layer_mode.get(name, "as-is")
            if mode == "wrap":
                _wrap_time_distributed(entry)
                self.context.wrapped.append(where_text(self.path, name))
            elif mode.startswith("axis:"):
                inner["axis"] = int(mode.split(":", 1)[1])


def _wrap_time_distributed(entry: dict) -> None:
    inner = {k: copy.deepcopy(v) for k, v in entry.items() if k not in ("inbound_nodes", "name")}
    inner.pop("build_config", None)
    name = Level.name_of(entry)
    policy = copy.deepcopy(entry.get("config", {}).get("dtype", "float32"))
    nodes = entry.get("inbound_nodes", [])
    entry.clear()
    entry.update({
        "module": "keras.layers",
        "class_name": "TimeDistributed",
        "config": {"name": name, "trainable": inner.get("config", {}).get("trainable", True),
                   "dtype": policy, "layer": inner},
        "registered_name": None,
        "name": name,
        "inbound_nodes": nodes,
    })


def _input_dependencies(level: Level, refs: list[tuple], memo: dict) -> set[int]:
    """Indices of a level's inputs that the given tensors depend on, not counting initial states."""
    dialect = level.dialect
    inputs = ref_list(level.config["input_layers"])
    position = {(r[0], r[1]): i for i, r in enumerate(inputs)}
    found: set[int] = set()
    queue = list(refs)
    visited = set()
    while queue:
        ref = tuple(queue.pop())
        if ref in visited:
            continue
        visited.add(ref)
        key = (ref[0], ref[1])
        if key in position:
            found.add(position[key])
            continue
        if not level.has_layer(ref[0]):
            continue
        entry = level.layer(ref[0])
        nodes = entry.get("inbound_nodes", [])
        if ref[1] >= len(nodes):
            continue
        node = nodes[ref[1]]
        if registry.is_recurrent(entry):
            follow = list(dialect.iter_tensors(node.get("args", [])))[:1]
            mask = dialect.get_kwarg(node, "mask")
            follow += list(dialect.iter_tensors(mask)) if mask is not None else []
        elif is_model_entry(entry):
            nested = _nested_level(entry, dialect, memo)
            out_refs = ref_list(nested.config["output_layers"])
            inner = _input_dependencies(nested, [out_refs[ref[2]]] if ref[2] < len(out_refs) else out_refs, memo)
            args = list(dialect.iter_tensors(node.get("args", [])[:1]))
            follow = [args[i] for i in sorted(inner) if i < len(args)]
        else:
            follow = list(dialect.iter_tensors(node))
        queue.extend(dialect.ref_of(t) for t in follow)
    return found


def _nested_level(entry: dict, dialect, memo: dict) -> Level:
    key = id(entry)
    if key not in memo:
        memo[key] = Level(entry, dialect)
    return memo[key]


def _recurrent_inputs(level: Level, memo: dict) -> set[int]:
    """Indices of a level's inputs that reach the sequence (or mask) of a recurrent call."""
    dialect = level.dialect
    seeds = []
    for entry in level.layers:
        for node in entry.get("inbound_nodes", []):
            if registry.is_recurrent(entry):
                seeds += list(dialect.iter_tensors(node.get("args", [])))[:1]
                mask = dialect.get_kwarg(node, "mask")
                seeds += list(dialect.iter_tensors(mask)) if mask is not None else []
            elif is_model_entry(entry):
                nested = _nested_level(entry, dialect, memo)
                fed = _recurrent_inputs(nested, memo)
                args = list(dialect.iter_tensors(node.get("args", [])[:1]))
                seeds += [args[i] for i in sorted(fed) if i < len(args)]
    return _input_dependencies(level, [dialect.ref_of(t) for t in seeds], memo)


def _refuse_sites(config: dict, family: str) -> None:
    for site in find_sites(config, family):
        if site.class_name.startswith("Bidirectional"):
            raise NotSupportedError(
                f"cannot stream layer {site.path!r} ({site.class_name}): {ACROSS_TIME['Bidirectional']}"
            )
        if site.go_backwards:
            raise NotSupportedError(
                f"cannot stream layer {site.path!r} ({site.class_name}): it has go_backwards=True: it reads the "
                "sequence from its end, so its output at a step depends on later steps"
            )
        if site.fed_by_graph:
            raise NotSupportedError(
                f"cannot stream layer {site.path!r} ({site.class_name}): its initial state comes from another "
                "layer (an encoder-decoder); split the model into encoder and decoder first"
            )


def step_config(model_config: dict, family: str = "keras3", *, steps: int | None = 1,
                batch_size: int | None = None, unroll: bool | None = None) -> tuple[dict, StreamPlan]:
    """(step model config, plan) from a serialized model. The input config is not modified.

    steps: timesteps per call (None: any length, for a full-sequence reference with state inputs).
    unroll: unroll the recurrent loops (default: when steps is at most 32).
    """
    if family != "keras3":
        raise NotSupportedError(f"streaming works on Keras 3 models; this model is {family!r} (tf_keras): "
                                "re-save it with Keras 3 first")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise UsageError(f"steps must be a positive integer, received {steps!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"batch size must be a positive integer, received {batch_size!r}")
    if unroll is None:
        unroll = steps is not None and steps <= UNROLL_MAX_STEPS
    if unroll and steps is None:
        raise UsageError("unrolling needs a fixed number of steps")
    _refuse_sites(model_config, family)
    # Which original inputs have a time axis: found on the original graph, before state inputs exist.
    original = Level(top_level_entry(model_config), dialect_for(family))
    sequence_positions = _recurrent_inputs(original, {})
    if not sequence_positions:
        raise NotSupportedError("the model has no recurrent layer reading an input sequence: nothing to stream")
    config, plan = rewire_states(model_config, family, outputs=True, inputs=True)
    if plan.skipped:
        site, reason = plan.skipped[0]
        raise NotSupportedError(f"cannot stream recurrent site {site!r}: {reason}")
    dialect = dialect_for(family)
    level = Level(config, dialect)
    inputs = ref_list(level.config["input_layers"])
    state_names = {s.name for s in plan.inputs}
    kinds = [SEQ if (i in sequence_positions and ref[0] not in state_names) else STATIC
             for i, ref in enumerate(inputs)]
    context = WalkContext(steps=steps, unroll=bool(unroll))
    top = _LevelStream(level, context, ())
    out_kinds = top.run(kinds)
    for ref in inputs:
        entry = level.layer(ref[0])
        shape = list(dialect.input_layer_shape(entry))
        shape[0] = batch_size
        entry["config"]["batch_shape"] = shape
    config.pop("compile_config", None)
    config.pop("build_config", None)
    original_outputs = out_kinds[: plan.original_outputs]
    if STATE in original_outputs:
        raise NotSupportedError("a model output is the final state of a recurrent layer; a step model carries "
                                "states as its state outputs: drop that output (or expose the states instead)")
    names = [ref[0] for ref in inputs]
    input_ranks = tuple(len(dialect.input_layer_shape(level.layer(ref[0]))) for ref in inputs[: plan.original_inputs])
    stream_plan = StreamPlan(
        steps=steps,
        batch_size=batch_size,
        states=plan,
        sequence_inputs=tuple(n for n, k in zip(names, kinds) if k == SEQ),
        static_inputs=tuple(n for n, k in zip(names[: plan.original_inputs], kinds) if k != SEQ),
        output_kinds=tuple(original_outputs),
        per_step_sites=tuple(context.per_step_sites),
        wrapped=tuple(context.wrapped),
        masked=tuple(context.masked),
        unrolled=bool(unroll),
        input_ranks=input_ranks,
    )
    return config, stream_plan


def sequence_config(model_config: dict, family: str = "keras3") -> dict:
    """The original model, unchanged except that it takes any sequence length and batch size.

    This is the full-sequence model that streaming is checked against.
    """
    if family != "keras3":
        raise NotSupportedError(f"streaming works on Keras 3 models; this model is {family!r}")
    dialect = dialect_for(family)
    level = Level(top_level_entry(model_config), dialect)
    positions = _recurrent_inputs(level, {})
    inputs = ref_list(level.config["input_layers"])
    kinds = [SEQ if i in positions else STATIC for i in range(len(inputs))]
    _LevelStream(level, WalkContext(steps=None, unroll=False, relax=True), ()).run(kinds)
    for ref in inputs:
        entry = level.layer(ref[0])
        shape = list(dialect.input_layer_shape(entry))
        shape[0] = None
        entry["config"]["batch_shape"] = shape
    level.entry.pop("compile_config", None)
    return level.entry


# --------------------------------------------------------------------------------------
# Live models
# --------------------------------------------------------------------------------------
