"""Per-timestep states computed by the model itself: the layer's own cell, stepped by Keras.

`return_sequences` gives `h` only. Here a site's cell is stepped by `keras.backend.rnn`
(what `RNN.inner_loop` runs) with a step function that returns the cell's whole new state
as the step's output, so one pass yields every state at every step. The mask rides along as
a second input, and the step carries the state where it is 0, exactly as Keras does
(`new_states = where(mask, new, old)`); carrying in the step rather than through rnn's
`mask=` keeps the initial state, not zeros, before the first unmasked step.

Trajectories are written in input time order: for a backward layer (go_backwards, the
backward half of a Bidirectional), position t holds the state after it consumed steps
T-1..t.
"""

from __future__ import annotations

from surgery.errors import NotSupportedError
from surgery.io.quiet import import_keras

_CLASS = None


def trajectory_layer_class():
    """The Keras 3 layer class (built on first use: importing this module stays Keras-free)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    keras = import_keras()
    from keras import ops, tree
    from keras.src import backend

    class StateTrajectory(keras.layers.Layer):
        """Outputs: every state of the wrapped recurrent layer at every step (flat, in the order
        Keras returns them; a Bidirectional's forward then backward), then the mask it saw."""

        def __init__(self, rnn, **kwargs):
            super().__init__(**kwargs)
            self.rnn = rnn
            self.supports_masking = True

        def call(self, sequence, mask=None, initial_state=None):
            initial = list(initial_state or [])
            steps = ops.shape(sequence)[1]
            batch = ops.shape(sequence)[0]
            seen = (ops.ones((batch, steps), dtype="bool") if mask is None
                    else ops.cast(mask, "bool"))
            if isinstance(self.rnn, keras.layers.Bidirectional):
                half = len(initial) // 2
                parts = (self._run(self.rnn.forward_layer, sequence, seen, initial[:half])
                         + self._run(self.rnn.backward_layer, sequence, seen, initial[half:]))
            else:
                parts = self._run(self.rnn, sequence, seen, initial)
            return parts + [seen]

        def compute_mask(self, inputs, mask=None):
            return None

        def _run(self, layer, sequence, seen, initial):
            cell = layer.cell
            template = layer.get_initial_state(batch_size=ops.shape(sequence)[0])
            if not tree.is_nested(template):
                template = [template]
            start = tree.pack_sequence_as(template, initial) if initial else template
            start = tree.map_structure(lambda x: ops.convert_to_tensor(x, dtype=cell.compute_dtype), start)
            kwargs = {"training": False} if getattr(cell, "_call_has_training_arg", True) else {}

            def step(x, states):
                _, new = cell(x, states, **kwargs)
                if not tree.is_nested(new):
                    new = [new]
                return tuple(tree.flatten(new)), new

            # rnn carries the state at masked steps (Keras' rule) and repeats the previous
            # output there, i.e. the carried state, but zeros before the first unmasked step.
            _, outputs, _ = backend.rnn(step, sequence, start, mask=seen, go_backwards=layer.go_backwards,
                                        return_all_outputs=True, zero_output_for_mask=False)
            outputs = list(tree.flatten(outputs))
            if layer.go_backwards:  # processed (reversed) order back to input order
                outputs = [ops.flip(o, axis=1) for o in outputs]
            # Steps before the first unmasked one (in processing order) hold the initial state.
            counted = ops.cast(seen, "int32")
            if layer.go_backwards:
                started = ops.flip(ops.cumsum(ops.flip(counted, axis=1), axis=1), axis=1) > 0
            else:
                started = ops.cumsum(counted, axis=1) > 0
            initial_flat = tree.flatten(start)
            fixed = []
            for out, init in zip(outputs, initial_flat):
                keep = started
                for _ in range(len(out.shape) - 2):
                    keep = ops.expand_dims(keep, -1)
                fixed.append(ops.where(keep, out, ops.expand_dims(ops.cast(init, out.dtype), 1)))
            outputs = fixed
            return outputs

    _CLASS = StateTrajectory
    return _CLASS


def trajectory_model(model, sites, family):
    """A Keras 3 model from the model's inputs to, per site, every state at every step and the
    mask; plus the output keys in order. Sites inside nested models are not supported."""
    keras = import_keras()
    layer_class = trajectory_layer_class()
    outputs, keys = [], []
    for site in sites:
        if site.model_path:
            raise NotSupportedError(f"--trajectory of site {site.name!r} inside nested model "
                                    f"{'/'.join(site.model_path)!r} is not supported; extract its final states")
        layer = model.get_layer(site.layer)
        if not hasattr(layer, "cell") and not isinstance(layer, keras.layers.Bidirectional):
            raise NotSupportedError(f"--trajectory of site {site.name!r} ({site.class_name}) is not supported")
        node = family.node_of(model, layer, site.call_index)
        sequence, mask, initial = family.recurrent_call_parts(node)
        kwargs = {}
        if mask is not None:
            kwargs["mask"] = mask
        if initial:
            kwargs["initial_state"] = list(initial)
        results = layer_class(layer, name=f"{site.name}__trajectory")(sequence, **kwargs)
        outputs.extend(results)
        keys.extend([s.output_name for s in site.states] + [f"{site.name}_mask"])
    return keras.Model(model.inputs, outputs), keys
