"""The split on a live model (`split_seq2seq`), the step-by-step check against the teacher-forced
original (`check_stepwise`, StepReport) and `greedy_decode`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


from surgery.check import tolerance
from surgery.check.report import CheckReport
from surgery.errors import NotSupportedError, UsageError
from surgery.io import families
from surgery.io.quiet import import_keras, quiet
from surgery.ops.seq2seq.plan import SplitPlan, split_config


@dataclass
class Seq2SeqSplit:
    """`encoder, decoder = split_seq2seq(model)` unpacks the two models."""

    encoder: object
    decoder: object
    plan: SplitPlan

    def __iter__(self):
        return iter((self.encoder, self.decoder))


def split_seq2seq(model, *, custom_objects=None) -> Seq2SeqSplit:
    """Split a trained encoder-decoder Keras model into an encoder and a decoder step model.

    The input model is not modified; the new models get copies of its weights.
    """
    from surgery.ops.expose import build_from_config, transfer_weights

    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise NotSupportedError(
            f"split-seq2seq works on Keras {keras.__version__.split('.')[0]} models; received a "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    with quiet():
        # Through JSON so the live config has the exact shape of a saved one (lists, not tuples).
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    encoder_config, decoder_config, plan = split_config(config, "keras3")
    encoder = build_from_config(encoder_config, custom_objects=custom_objects)
    decoder = build_from_config(decoder_config, custom_objects=custom_objects)
    transfer_weights(model, encoder)
    transfer_weights(model, decoder)
    return Seq2SeqSplit(encoder, decoder, plan)


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def _run(model, values: list) -> list[np.ndarray]:
    with quiet():
        out = model(values if len(values) > 1 else values[0], training=False)
    return [np.asarray(v) for v in families.as_list(out)]


# --------------------------------------------------------------------------------------------
# the check: encoder, then the decoder one step at a time, against teacher forcing

@dataclass
class StepReport(CheckReport):
    """Stepped vs teacher-forced outputs (surgery.check.report.CheckReport), each judged by the
    tolerance policy (surgery.check.tolerance)."""

    steps: int = 0
    checks_label: str = "output(s) vs the teacher-forced original"

    def __post_init__(self):
        self.what = self.what or (f"encoder, then the decoder step model run {self.steps} step(s) one token at "
                                  f"a time (batch {self.batch})")

    @property
    def output_diffs(self) -> dict[str, float]:
        return self.errors

    @property
    def tolerances(self) -> dict[str, tolerance.Bound]:
        return self.bounds

    def details(self) -> dict:
        return {"output_max_abs_diff": self.output_diffs,
                "tolerance": {name: b.describe() for name, b in self.tolerances.items()},
                "steps": self.steps}


def sample_inputs(original, decoder, *, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """verify.random_inputs for the training model, without padding on the decoder-only inputs.

    A masked (padded) decoder step repeats the previous output in a teacher-forced run but has
    no previous output in a one-step call; states are carried either way.
    """
    from surgery.check.verify import random_inputs

    values = random_inputs(original, batch=batch, seed=seed)
    fill = random_inputs(original, batch=batch, seed=seed + 1)
    stepped = set(input_names(decoder))
    for i, name in enumerate(input_names(original)):
        value = values[i]
        if name in stepped and value.ndim >= 2 and value.shape[0] > 1 and value.shape[1] >= 4:
            value[1, -2:] = fill[i][0, -2:]
    return values


def stepwise_outputs(encoder, decoder, values_by_name: dict, original_outputs: int) -> tuple[list, int]:
    """Run the encoder, then the decoder one time step at a time, teacher-forced with the given inputs.

    Returns (per original output: the list of per-step outputs, number of steps).
    """
    enc_out = _run(encoder, [values_by_name[n] for n in input_names(encoder)])
    states = dict(zip(encoder.output_names, enc_out))
    names = input_names(decoder)
    state_names = [n for n in names if n not in values_by_name]
    stepped = [n for n in names if n in values_by_name and n not in set(input_names(encoder))]
    if not stepped:
        stepped = [n for n in names if n in values_by_name]
    steps = {values_by_name[n].shape[1] for n in stepped}
    if len(steps) != 1:
        raise UsageError(f"decoder inputs {stepped} have different time lengths {sorted(steps)}")
    count = steps.pop()
    batch = values_by_name[stepped[0]].shape[0]
    shapes = {n: t.shape for n, t in zip(names, decoder.inputs)}
    for name in state_names:
        if name not in states:  # a decoder layer that starts from zeros
            states[name] = np.zeros((batch, *shapes[name][1:]), dtype=str(decoder.inputs[names.index(name)].dtype))
    collected: list[list] = [[] for _ in range(original_outputs)]
    for t in range(count):
        feed = []
        for name in names:
            if name in stepped:
                feed.append(values_by_name[name][:, t:t + 1])
            elif name in values_by_name:
                feed.append(values_by_name[name])
            else:
                feed.append(states[name])
        out = _run(decoder, feed)
        for j in range(original_outputs):
            collected[j].append(out[j])
        for name, value in zip(state_names, out[original_outputs:]):
            states[name] = value
    return collected, count


def check_stepwise(original, encoder, decoder, values: list | None = None, *, batch: int = 4,
                   seed: int = 0) -> StepReport:
    """Teacher-forced outputs of `original` vs. encoder + decoder step model run step by step."""
    if values is None:
        values = sample_inputs(original, decoder, batch=batch, seed=seed)
    by_name = dict(zip(input_names(original), values))
    reference = _run(original, values)
    collected, steps = stepwise_outputs(encoder, decoder, by_name, len(reference))
    report = StepReport(steps=steps, batch=values[0].shape[0])
    names = list(original.output_names)
    for j, expected in enumerate(reference):
        per_step = collected[j]
        if expected.ndim >= 2 and per_step[0].ndim == expected.ndim and per_step[0].shape[1] == 1 \
                and expected.shape[1] == steps:
            got = np.concatenate(per_step, axis=1)
        else:  # a last-step-only output
            got = per_step[-1]
        name = names[j] if j < len(names) else f"output_{j}"
        bound = tolerance.bound_for(expected.dtype, steps=steps)
        report.checks[name] = tolerance.compare(got, expected, bound)
    return report


# --------------------------------------------------------------------------------------------
# greedy decoding


def _state_pairs(decoder) -> tuple[list[str], list[tuple[str, str]]]:
    """(token inputs, [(state output, state input)]) of a decoder step model, by the naming rule."""
    names = input_names(decoder)
    outputs = list(decoder.output_names)
    pairs = [(out, f"{out}_in") for out in outputs if f"{out}_in" in names]
    state_inputs = {inp for _, inp in pairs}
    return [n for n in names if n not in state_inputs], pairs


def _encoder_feed(encoder, source):
    """The encoder's input from token ids (batch, T) or (T,), one-hot encoding when it wants floats."""
    if len(encoder.inputs) != 1:
        if not isinstance(source, (list, tuple)) or len(source) != len(encoder.inputs):
            raise UsageError(f"the encoder has {len(encoder.inputs)} inputs: pass a list of {len(encoder.inputs)} arrays")
        return [np.asarray(s) for s in source], False
    spec = encoder.inputs[0]
    rank = len(spec.shape)
    dtype = str(spec.dtype)
    x = np.asarray(source)
    one_hot = rank == 3 and np.issubdtype(x.dtype, np.integer) and "int" not in dtype
    token_rank = rank - 1 if one_hot else rank
    single = x.ndim == token_rank - 1
    if single:
        x = x[None]
    if x.ndim != token_rank:
        raise UsageError(f"source of shape {np.asarray(source).shape} does not fit the encoder input {tuple(spec.shape)}")
    if one_hot:
        depth = spec.shape[-1]
        if x.size and (x.min() < 0 or x.max() >= depth):
            raise UsageError(f"token ids must lie in 0..{depth - 1} for the one-hot encoder input")
        x = np.eye(depth, dtype=dtype)[x]
    else:
        x = x.astype(dtype)
    return [x], single


def greedy_decode(encoder, decoder, source_tokens, start_token: int, end_token: int, max_len: int):
    """Argmax decoding with an encoder and a decoder step model from `split_seq2seq`.

    source_tokens: token ids, one sequence (T,) or a batch (B, T); a one-hot encoder input gets
    them one-hot encoded. The decoder is fed `start_token`, then its own argmax, one step at a
    time, carrying its states, until it emits `end_token` or `max_len` tokens were produced.
    Returns the produced tokens without the end token: a list of ints for one sequence, a list
    of lists for a batch.
    """
    if max_len < 0:
        raise UsageError(f"max_len must be >= 0, received {max_len}")
    feed, single = _encoder_feed(encoder, source_tokens)
    batch = feed[0].shape[0]
    token_inputs, pairs = _state_pairs(decoder)
    if len(token_inputs) != 1:
        raise UsageError(f"greedy_decode needs a decoder with one token input; it has {token_inputs}")
    names = input_names(decoder)
    specs = dict(zip(names, decoder.inputs))
    token_name = token_inputs[0]
    token_spec = specs[token_name]
    states = dict(zip(encoder.output_names, _run(encoder, feed)))
    for _, name in pairs:
        if name not in states:
            states[name] = np.zeros((batch, *specs[name].shape[1:]), dtype=str(specs[name].dtype))
    outputs = list(decoder.output_names)
    positions = {name: outputs.index(out) for out, name in pairs}
    token = np.full((batch,), start_token, dtype=np.int64)
    produced = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    for _ in range(max_len):
        if len(token_spec.shape) == 3:  # one-hot decoder input
            step = np.eye(token_spec.shape[-1], dtype=str(token_spec.dtype))[token][:, None, :]
        else:
            step = token[:, None].astype(str(token_spec.dtype))
        out = _run(decoder, [step if n == token_name else states[n] for n in names])
        probs = out[0]
        token = probs.reshape(batch, -1, probs.shape[-1])[:, -1].argmax(-1)
        for name, position in positions.items():
            states[name] = out[position]
        for row in range(batch):
            if not done[row]:
                if int(token[row]) == end_token:
                    done[row] = True
                else:
                    produced[row].append(int(token[row]))
        if done.all():
            break
    return produced[0] if single else produced


# --------------------------------------------------------------------------------------------
# files
