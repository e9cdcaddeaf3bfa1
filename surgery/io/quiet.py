"""Import Keras/TensorFlow without their log spam reaching the user's terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings


def _silence_environment() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@contextlib.contextmanager
def _stderr_to_null():
    """TensorFlow's C++ runtime writes to fd 2 directly during import; hide only that."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Return the Keras 3 module, importing TensorFlow quietly on first use."""
    if "keras" not in sys.modules:
        _silence_environment()
        with _stderr_to_null(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            import tensorflow as tf  # noqa: F401
            import keras  # noqa: F401

            # CRITICAL: even ERROR lines (e.g. "Object was never used" when a run is
            # interrupted mid-graph) are noise on a CLI that reports every failure itself.
            tf.get_logger().setLevel(logging.CRITICAL)
            logging.getLogger("absl").setLevel(logging.ERROR)
            keras.utils.disable_interactive_logging()
    import keras

    return keras


def import_tensorflow():
    import_keras()
    import tensorflow as tf

    return tf


@contextlib.contextmanager
def quiet():
    """Silence Python warnings and TF C++ logs around a noisy Keras call."""
    with warnings.catch_warnings(), _stderr_to_null():
        warnings.simplefilter("ignore")
        yield
