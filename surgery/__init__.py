"""lstm-surgery: expose, inject, stream and splice the state of recurrent layers in saved
Keras/TensorFlow models.

Every function takes a path or a live model (Keras 3 or tf_keras), returns new objects and
never modifies its input. Importing this package does not import TensorFlow: `inspect`,
`diff` and the static readers stay light; operations that need Keras import it on first use.
"""

import sys as _sys

# The submodules that share a name with a function are imported first, so that the function
# (set below) is what `surgery.<name>` means afterwards; the modules stay in sys.modules.
import surgery.diff  # noqa: F401,E402
import surgery.inspect  # noqa: F401,E402
import surgery.splice  # noqa: F401,E402
import surgery.verify  # noqa: F401,E402
from surgery import api as _api
from surgery.api import (
    diff,
    expose_state,
    find_sites,
    inspect,
    load_model,
    save,
    splice,
    split_seq2seq,
    to_step_model,
    verify,
    verify_streaming,
)
from surgery.errors import (
    NotSupportedError,
    SurgeryError,
    UnreadableModelError,
    UnsafeContentError,
    UsageError,
    VerificationError,
)

__version__ = "0.1.0"


def __getattr__(name):
    if name == "StreamSession":  # a class whose module imports Keras: resolved on first use
        from surgery.session import StreamSession

        return StreamSession
    if name == "extract_states":  # states over a whole dataset (surgery/extract/)
        from surgery.extract import extract_states

        return extract_states
    raise AttributeError(f"module 'surgery' has no attribute {name!r}")


_ERRORS = ("SurgeryError", "UsageError", "UnreadableModelError", "UnsafeContentError", "NotSupportedError",
           "VerificationError")
__all__ = sorted([*_api.PUBLIC_FUNCTIONS, "StreamSession", *_ERRORS])


def _function_index() -> str:
    """One line per public function for help(surgery): name(signature) - first docstring line."""
    import inspect as _inspect_module

    lines = ["", "Functions:"]
    for name in _api.PUBLIC_FUNCTIONS:
        function = getattr(_api, name)
        doc = (function.__doc__ or "").strip().splitlines()[0]
        lines.append(f"    {name}{_inspect_module.signature(function)}")
        lines.append(f"        {doc}")
    lines += ["", "Classes:", "    StreamSession(model, steps=1, batch_size=1, backend='auto')",
              "        Feed a model one chunk of timesteps at a time, its state carried between calls.",
              "    " + ", ".join(_ERRORS), "        Errors, one line each, mapped to the CLI's exit codes."]
    return "\n".join(lines)


__doc__ += _function_index()
_sys.modules[__name__].__dict__.update({name: getattr(_api, name) for name in _api.PUBLIC_FUNCTIONS})
