"""Run a model file on saved inputs, in its own process (so the test process loads no Keras).

    python run_model.py MODEL INPUTS.npz OUTPUTS.npz [CUSTOM_OBJECTS.py]

Keras 2 files (.h5) are loaded with tf_keras, Keras 3 files (.keras) with keras; the original inputs are
fed in order (npz keys __pos0, __pos1, ...), state inputs by name, the outputs are saved under the model's output names, in order, as
`0:<name>`, `1:<name>`, ...
"""

import importlib.util
import inspect
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def custom_objects(path):
    if not path:
        return {}
    spec = importlib.util.spec_from_file_location("real_custom_objects", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {n: o for n, o in vars(module).items() if inspect.isclass(o) and o.__module__ == module.__name__}


def main(model, inputs, outputs, custom=None):
    data = dict(np.load(inputs))
    if model.endswith(".keras"):
        import keras

        m = keras.saving.load_model(model, compile=False, custom_objects=custom_objects(custom))
        names = [t.name.split(":")[0] for t in m.inputs]
        out_names = list(m.output_names) if hasattr(m, "output_names") else [f"out{i}" for i in range(len(m.outputs))]
    else:
        import tf_keras

        m = tf_keras.models.load_model(model, compile=False, custom_objects=custom_objects(custom))
        names = list(m.input_names)
        out_names = list(m.output_names)
    from surgery.check import cudnn_cpu

    if cudnn_cpu.model_cannot_run(m):
        # cuDNN layers on a machine without a GPU: the same model with each cuDNN layer as the
        # LSTM/GRU of the same semantics (the tool's CPU stand-in; the file's own weights).
        m = cudnn_cpu.standin(m)
    positional = [data.pop(k) for k in sorted((k for k in data if k.startswith("__pos")), key=lambda k: int(k[5:]))]
    feed = []
    for n in names:
        feed.append(data[n] if n in data else positional.pop(0))
    ys = m(feed if len(feed) > 1 else feed[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    if isinstance(ys, dict):
        ys = list(ys.values())
    np.savez(outputs, **{f"{i}:{n}": np.asarray(y) for i, (n, y) in enumerate(zip(out_names, ys))})


if __name__ == "__main__":
    main(*sys.argv[1:])
