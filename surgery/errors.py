"""Exceptions raised by the library; each carries the CLI exit code it maps to.

Exit codes (documented in the README): 0 ok, 1 verification failed, 2 usage error or
unreadable input (including a resource limit hit while reading it), 3 unsafe content
refused, 4 model not supported, 5 internal error (a bug in the tool).
"""


class SurgeryError(Exception):
    """Base class. `exit_code` is what the CLI returns for it."""

    exit_code = 2


class UsageError(SurgeryError):
    """The caller asked for something inconsistent (bad option, existing output, ...)."""

    exit_code = 2


class UnreadableModelError(SurgeryError):
    """The input is not a model file we can read (corrupt, truncated, wrong kind)."""

    exit_code = 2


class UnsafeContentError(SurgeryError):
    """The file would execute code on load (Lambda, foreign module, ...) and was refused."""

    exit_code = 3


class NotSupportedError(SurgeryError):
    """The model is readable but this operation cannot be applied to it."""

    exit_code = 4


class VerificationError(SurgeryError):
    """The rebuilt model does not reproduce the original (or the oracle)."""

    exit_code = 1


class ResourceLimitError(SurgeryError):
    """Work on the input exceeded a limit (wall time, memory, open files) and was stopped."""

    exit_code = 2


class InternalError(SurgeryError):
    """A bug in the tool, not a problem with the input: please report it."""

    exit_code = 5
