"""The naive route the verified `expose-state` is measured against: what a user would do by hand.

    python benchmarks/naive_expose.py MODEL.keras OUT.keras

Loads the model with plain Keras (`keras.saving.load_model`, which runs every initializer
and then overwrites it with the file's weights), builds the same rewired config the tool
writes (every LSTM's h and c as extra outputs) with `keras.saving.deserialize_keras_object`,
copies the weights across with `set_weights`, and saves the new model with `model.save`.
No verification at all.
"""

import sys
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from surgery.graph.rewire import rewire_states  # noqa: E402  (the config edit only; no tool I/O)


def main(source: str, dest: str) -> None:
    model = keras.saving.load_model(source, compile=False)
    config = keras.saving.serialize_keras_object(model)
    new_config, _plan = rewire_states(config, "keras3", outputs=True, inputs=False)
    rebuilt = keras.saving.deserialize_keras_object(new_config)
    rebuilt.set_weights(model.get_weights())
    rebuilt.save(dest)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
