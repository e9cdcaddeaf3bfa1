"""lstm-surgery: expose, inject, stream and splice the state of recurrent layers in saved
Keras/TensorFlow models.

Importing this package does not import TensorFlow: `inspect` and the static readers stay
light. Operations that need Keras import it on first use.
"""

from surgery.errors import (
    NotSupportedError,
    SurgeryError,
    UnreadableModelError,
    UnsafeContentError,
    UsageError,
    VerificationError,
)

__version__ = "0.1.0"

# Public names resolved lazily so that `import surgery` stays TensorFlow-free.
_LAZY = {
    "inspect": ("surgery.inspect", "inspect"),
    "read_artifact": ("surgery.formats", "read_artifact"),
    "find_sites": ("surgery.sites", "find_sites"),
    "load_model": ("surgery.loading", "load_model"),
    "expose_state": ("surgery.expose", "expose_state"),
    "save_model": ("surgery.saving", "save_model"),
    "verify": ("surgery.verify", "verify"),
    "verify_files": ("surgery.verify", "verify_files"),
    "to_step_model": ("surgery.stream", "to_step_model"),
    "verify_streaming": ("surgery.stream", "verify_streaming"),
    "StreamSession": ("surgery.session", "StreamSession"),
    "split_seq2seq": ("surgery.seq2seq", "split_seq2seq"),
    "splice": ("surgery.splice", "splice"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'surgery' has no attribute {name!r}")


__all__ = sorted(
    list(_LAZY)
    + [
        "SurgeryError",
        "UsageError",
        "UnreadableModelError",
        "UnsafeContentError",
        "NotSupportedError",
        "VerificationError",
    ]
)
