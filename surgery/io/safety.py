"""Static safety scan of a serialized model config, run BEFORE any Keras deserialization.

Keras rebuilds a model by looking up classes and functions named in the config. Some of
those run arbitrary code (a Lambda's marshalled bytecode), load other artifacts
(TFSMLayer), reach outside Keras (a `module` naming a foreign package), or are not
modelling APIs at all (`keras.config.enable_unsafe_deserialization`, `get_file`). This
module walks the config as plain JSON data, names every such place, and refuses it unless
the user opted in.

Keys that carry code references, from keras/src/saving/serialization_lib.py:
`class_name`, `module`, `registered_name` (custom objects are "package>Name"),
`config` when class_name is "function" (the function's name), `spec_name` (TypeSpecs);
Lambda layers carry `function` ({"class_name": "__lambda__", "config": {"code": ...}} in
Keras 3, base64 marshalled bytecode plus "function_type": "lambda" in Keras 2).

Allowlists, not denylists: a `module` passes only with a class or function Keras itself
writes there (keras_names.py); a class_name without a module only if Keras knows it;
tf_keras op layers only with pure TensorFlow ops and tensor attributes (tf_pure_ops.py).
Values that name a file (a string `vocabulary`, any `*_file` / `*_path` / `filepath` key)
or a URL anywhere are refused as "file_reference": tf_keras reads a vocabulary file while
the model is rebuilt, even in its safe mode.

What is allowed (the name tables) is in surgery.io.safety_tables; this module walks a config and
judges each object against them.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from surgery.errors import UnsafeContentError
from surgery.io.keras_names import KERAS_CLASSES
from surgery.io.safety_tables import (
    CODE_LOADING_NAMES,
    KERAS_FUNCTION_MODULES,
    KERAS_PACKAGES,
    KERAS_REGISTERED_NAMES,
    KERAS_TYPESPECS,
    KNOWN_CLASS_NAMES,
    KNOWN_FUNCTION_NAMES,
    LAMBDA_NAMES,
    PATH_KEYS,
    PATH_KEY_SUFFIXES,
    SERIALIZATION_MARKERS,
    TFSM_NAMES,
    TF_ATTRIBUTE_LAYERS,
    TF_CLASS_METHOD_LAYERS,
    TF_OP_LAYERS,
    UNSAFE_API_NAMES,
    UNSAFE_MODULE_ROOTS,
)


@dataclass(frozen=True)
class Finding:
    path: str  # where in the config, e.g. "config.layers[2].config.layer.config.function"
    # "lambda" | "foreign_module" | "tfsmlayer" | "unsafe_api" | "custom_object" | "file_reference"
    kind: str
    detail: str  # human text naming the offending value
    # A custom object that only the training configuration names and that no Keras resolves
    # by importing anything: listed, never refused (see training_only).
    training_only: bool = False


_URL = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://|file:)", re.IGNORECASE)

_DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.>][A-Za-z_][A-Za-z0-9_]*)+")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]+")
_REFERENCE_SEPARATORS = re.compile(r"[.>/:]")
# marshal type codes for a code object ('c', with or without the FLAG_REF bit).
_MARSHAL_CODE_TYPES = (0x63, 0xE3)
_MIN_BYTECODE_TEXT = 24

# Keys whose string values _check_object already judges in context.
_IDENTITY_KEYS = frozenset({"class_name", "module", "registered_name", "spec_name"})

_OPT_IN_UNSAFE = "pass --unsafe if you trust this file"
_OPT_IN_CUSTOM = (
    "register it with --custom-objects FILE.py, or pass --unsafe if you trust this file"
)


# ----------------------------------------------------------------------------------------
# Public API


def scan_config(config: dict) -> list[Finding]:
    """Every unsafe place in a serialized model config, in document order."""
    return [finding for finding, _ in _scan(config)]


def ensure_safe(
    config: dict, *, allow_unsafe: bool = False, trusted: Iterable[str] = ()
) -> None:
    """Raise UnsafeContentError unless every finding is opted into.

    `trusted`: registered names ("package>Name") or class / function names the user
    registered through --custom-objects; they allow custom objects and foreign modules,
    never Lambdas, TFSMLayers or non-modelling APIs (only allow_unsafe does).
    """
    if allow_unsafe:
        return
    trusted_names = frozenset(trusted)
    refused = [
        finding for finding, trust_keys in _scan(config)
        if not (trust_keys & trusted_names) and not training_only(finding)
    ]
    if not refused:
        return
    first = refused[0]
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    opt_in = _OPT_IN_CUSTOM if first.kind in ("custom_object", "foreign_module") else _OPT_IN_UNSAFE
    message = (
        f"refusing unsafe model content: {first.kind} at {_shorten(first.path)}: "
        f"{first.detail}{more}; {opt_in}"
    )
    # Keys and values come from the file: keep the message on one line whatever they hold.
    raise UnsafeContentError(message.replace("\r", "\\r").replace("\n", "\\n"))


def ensure_artifact_safe(
    artifact, *, allow_unsafe: bool = False, trusted: Iterable[str] = ()
) -> None:
    """The one safety gate before a file's content reaches Keras.

    Covers the container hazards the static read recorded (artifact.hazards), the model
    config, and every embedded config the loader would deserialize on its own.
    """
    if allow_unsafe:
        return
    if artifact.hazards:
        first = artifact.hazards[0]
        more = f" (and {len(artifact.hazards) - 1} more)" if len(artifact.hazards) > 1 else ""
        message = (
            f"refusing unsafe model content: {first.kind} at {_shorten(first.path)}: "
            f"{first.detail}{more}; {_OPT_IN_UNSAFE}"
        )
        raise UnsafeContentError(message.replace("\r", "\\r").replace("\n", "\\n"))
    if artifact.model_config is not None:
        ensure_safe(artifact.model_config, trusted=trusted)
    for where, config in artifact.embedded_configs:
        try:
            ensure_safe(config, trusted=trusted)
        except UnsafeContentError as error:
            raise UnsafeContentError(f"{error} [in {where}]") from None


# Keras 3's top-level training configuration (optimizer, loss, metrics). Every model this tool
# builds computes without it: load_model(compile=False) never reads it, and a rebuilt model
# whose training configuration names what cannot be found is built without it.
TRAINING_CONFIG_KEY = "compile_config"


def _in_training_config(location: _Location | None) -> bool:
    while location is not None and location[0] is not None:
        location = location[0]
    return location is not None and location[1] == TRAINING_CONFIG_KEY


def _training_only(location: _Location | None, obj: Any, kind: str) -> bool:
    """A custom object (a loss, a metric of the file's own) that only the training
    configuration names and that no Keras finds by importing a module (no module, or Keras 3's
    "builtins" for a function saved by name): resolved only among the user's custom objects,
    and nothing here compiles a model, so it needs no registration."""
    return (kind == "custom_object" and isinstance(obj, dict) and obj.get("module") in (None, "builtins")
            and _in_training_config(location))


def training_only(finding: Finding) -> bool:
    """True for a finding listed but never refused (see _training_only)."""
    return finding.training_only


def _shorten(path: str, limit: int = 400) -> str:
    """A path from absurdly deep nesting would flood the message; keep both ends."""
    if len(path) <= limit:
        return path
    return f"{path[:150]}...{path[-(limit - 153):]}"


# ----------------------------------------------------------------------------------------
# The walk: explicit stack, so nesting depth cannot exhaust the Python stack


# A location is a linked list (parent location, key), rendered only for findings: keeping
# full path strings for every node would cost O(depth^2) on deep nesting.
_Location = tuple  # (parent: _Location | None, key: str | int) or None for the root


def _scan(config: Any) -> list[tuple[Finding, frozenset[str]]]:
    results: list[tuple[Finding, frozenset[str]]] = []
    for location, value in _walk(config):
        key = location[1] if location is not None else None
        if isinstance(value, dict):
            check = _check_object(value)
        elif key in _IDENTITY_KEYS:
            continue  # already judged with the object that holds it
        else:
            check = _check_string(value, key)
        if check is not None:
            kind, detail, trust_keys = check
            if _training_only(location, value, kind):
                finding = Finding(_render(location), kind, f"{detail}, named only by the training configuration",
                                  training_only=True)
            else:
                finding = Finding(_render(location), kind, detail)
            results.append((finding, trust_keys))
    return results


_WALKED = (dict, list, tuple, str)


def _walk(root: Any) -> Iterator[tuple[_Location | None, Any]]:
    """Pre-order walk yielding every dict and every string, with its location."""
    stack: list[tuple[_Location | None, Any]] = [(None, root)]
    seen: set[int] = set()  # guards against cyclic structures built in Python
    while stack:
        location, value = stack.pop()
        if isinstance(value, str):
            yield location, value
            continue
        is_dict = isinstance(value, dict)
        if not is_dict and not isinstance(value, (list, tuple)):
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        children = [((location, key), child)
                    for key, child in (value.items() if is_dict else enumerate(value))
                    if isinstance(child, _WALKED)]
        if is_dict:
            yield location, value
        children.reverse()
        stack.extend(children)


def _render(location: _Location | None) -> str:
    keys = []
    while location is not None:
        location, key = location
        keys.append(key)
    parts = []
    for key in reversed(keys):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            text = key if isinstance(key, str) and key.isprintable() else repr(key)
            parts.append(f".{text}" if parts else text)
    return "".join(parts) or "(root)"


# ----------------------------------------------------------------------------------------
# Checks. Each returns (kind, detail, trust keys) or None; trust keys are the names that,
# when registered by the user, make the finding acceptable (empty: never by trust).

_Check = tuple  # (kind: str, detail: str, trust_keys: frozenset[str])
_NOT_TRUSTABLE: frozenset[str] = frozenset()
_NO_NAMES: frozenset[str] = frozenset()
_OP_WRAPPER_LAYERS = TF_OP_LAYERS | TF_CLASS_METHOD_LAYERS | TF_ATTRIBUTE_LAYERS


def _check_object(obj: dict) -> _Check | None:
    class_name = _text(obj.get("class_name"))
    module = _text(obj.get("module"))
    registered = _text(obj.get("registered_name"))
    if class_name is None and module is None and registered is None:
        # Plain data (a layer's arguments, a call node): nothing names a class, a module or a
        # registration, so only Keras 2 lambda markers and a TypeSpec name can be unsafe.
        return _check_lambda(obj, _NO_NAMES) or (
            _check_unsafe_api(obj, None, None, None, None, _NO_NAMES) if "spec_name" in obj else None)
    function_name = _text(obj.get("config")) if class_name == "function" else None
    names = {n for n in (class_name, registered and _last_part(registered)) if n}

    return (
        _check_lambda(obj, names)
        or _check_tfsmlayer(obj, names)
        or _check_unsafe_api(obj, class_name, module, registered, function_name, names)
        or _check_op_layer(obj, class_name or registered, names)
        or _check_module(obj, class_name, module, registered, function_name)
        or _check_registered_name(class_name, registered)
    )


def _check_lambda(obj: dict, names: set[str]) -> _Check | None:
    if names & LAMBDA_NAMES:
        if "__lambda__" in names:
            return "lambda", "a Python lambda (marshalled bytecode)", _NOT_TRUSTABLE
        layer = _text(_inner(obj).get("name")) or _text(obj.get("name")) or "?"
        return "lambda", f"Lambda layer {layer!r} runs arbitrary Python code", _NOT_TRUSTABLE
    for key, value in obj.items():
        # Keras 2 Lambda configs: "function_type": "lambda", "output_shape_type": "lambda".
        if isinstance(value, str) and value == "lambda" and isinstance(key, str) and key.endswith("_type"):
            return "lambda", f"{key!r}: 'lambda', a marshalled Python function", _NOT_TRUSTABLE
    return None


def _check_tfsmlayer(obj: dict, names: set[str]) -> _Check | None:
    if not names & TFSM_NAMES:
        return None
    target = _inner(obj).get("filepath")
    return (
        "tfsmlayer",
        f"TFSMLayer loads and runs the SavedModel at {_quote(target)}",
        _NOT_TRUSTABLE,
    )


def _check_unsafe_api(
    obj: dict,
    class_name: str | None,
    module: str | None,
    registered: str | None,
    function_name: str | None,
    names: set[str],
) -> _Check | None:
    if names & CODE_LOADING_NAMES:
        return "unsafe_api", f"{class_name or registered!r} loads pickled code", _NOT_TRUSTABLE
    if module is not None and _root(module) in UNSAFE_MODULE_ROOTS:
        target = f"{module}.{function_name or class_name}"
        return "unsafe_api", f"reference to {target!r} (module {module!r})", _NOT_TRUSTABLE
    references = [
        value
        for value in (module, class_name, registered, function_name, _text(obj.get("spec_name")))
        if value
    ]
    for reference in references:
        hit = _unsafe_component(reference)
        if hit:
            full = ".".join(part for part in (module, function_name or class_name) if part)
            return "unsafe_api", f"non-modelling API {hit!r} in {full!r}", _NOT_TRUSTABLE
    return None


def _check_op_layer(obj: dict, layer: str | None, names: set[str]) -> _Check | None:
    """tf_keras op wrappers resolve a TensorFlow symbol or attribute by name at load time."""
    if not names & _OP_WRAPPER_LAYERS:
        return None
    from surgery.io import tf_pure_ops  # the large allowlists, read only for these layers

    inner = _inner(obj)
    if names & TF_OP_LAYERS:
        function = inner.get("function")
        if isinstance(function, str) and function in tf_pure_ops.TF_PURE_OPS:
            return None
        what = f"TensorFlow symbol {_quote('tf.' + function)}" if isinstance(function, str) \
            else f"function {_quote(function)}"
        return "unsafe_api", f"{layer!r} calls {what}, not a pure tensor op", _NOT_TRUSTABLE
    if names & TF_CLASS_METHOD_LAYERS:
        symbol, method = inner.get("cls_symbol"), inner.get("method_name")
        if symbol in tf_pure_ops.CLASS_METHOD_SYMBOLS and method in tf_pure_ops.CLASS_METHODS:
            return None
        return (
            "unsafe_api",
            f"{layer!r} calls {_quote(symbol)}.{_quote(method)}, not a tensor constructor",
            _NOT_TRUSTABLE,
        )
    if names & TF_ATTRIBUTE_LAYERS:
        attribute = inner.get("attr_name")
        if attribute in tf_pure_ops.TENSOR_ATTRIBUTES:
            return None
        return (
            "unsafe_api",
            f"{layer!r} reads attribute {_quote(attribute)}, not a tensor method or property",
            _NOT_TRUSTABLE,
        )
    return None


def _check_module(
    obj: dict,
    class_name: str | None,
    module: str | None,
    registered: str | None,
    function_name: str | None,
) -> _Check | None:
    raw_module = obj.get("module")
    if class_name is not None and raw_module is not None and module is None:
        return "foreign_module", f"module {_quote(raw_module)} is not a module name", _NOT_TRUSTABLE
    if class_name is None:
        if module is None or module in KERAS_CLASSES or module in KERAS_FUNCTION_MODULES:
            return None
        return "foreign_module", f"module {module!r} outside Keras", frozenset()
    if class_name in SERIALIZATION_MARKERS:
        return None  # decoded by Keras itself; module and registered_name are not read
    trust = _trust_keys(class_name, registered, function_name, module)
    if class_name == "__typespec__":
        spec = _text(obj.get("spec_name"))
        if module in KERAS_TYPESPECS and spec in KERAS_TYPESPECS[module]:
            return None
        return (
            "foreign_module",
            f"TypeSpec {_quote(obj.get('spec_name'))} from module {_quote(module)}",
            frozenset({spec} - {None}),
        )
    if class_name == "function":
        allowed = KERAS_FUNCTION_MODULES.get(module) if module else KNOWN_FUNCTION_NAMES
        # Keras 3 looks a non-"builtins" function up by registered_name: both must pass.
        names_ok = function_name in (allowed or ()) and (
            module == "builtins" or registered in (None, function_name, "function")
        )
        if names_ok:
            return None
        # Keras 3 writes a registered custom function as module "builtins" with the
        # "package>name" registration as its config, and an unregistered one as module
        # "builtins" with its bare name: Keras 3 looks either up only among its own functions
        # and the user's custom objects.
        # (tf_keras does import Python's builtins for a name Keras does not have: exec, eval,
        # open... stay foreign.)
        custom = (module is None or (module == "builtins" and function_name not in vars(builtins))
                  or any(name and ">" in name for name in (function_name, registered)))
        where = ("saved by name only (module 'builtins')" if module == "builtins" and custom
                 else "from module 'builtins' (Python's own function, to tf_keras)" if module == "builtins"
                 else f"from module {module!r}" if module else "without a module")
        return (
            "custom_object" if custom else "foreign_module",
            f"function {_quote(obj.get('config'))} {where}, not a Keras function",
            trust,
        )
    custom_registration = bool(registered and ">" in registered)
    if module is None:
        # Keras 2 configs, and Keras 3 objects without "module": resolved only among the
        # Keras classes of that kind or the user's custom objects.
        known = class_name in KNOWN_CLASS_NAMES or _keras_registration(class_name)
        if known and not custom_registration:
            return None
        return (
            "custom_object",
            f"custom class {class_name!r}"
            + (f" (registered as {registered!r})" if registered else ""),
            trust,
        )
    if class_name in KERAS_CLASSES.get(module, ()):
        return None
    if class_name in KNOWN_CLASS_NAMES and not custom_registration:
        return (
            "foreign_module",
            f"class {class_name!r} from module {module!r}, not where Keras writes it",
            trust,
        )
    return (
        "custom_object",
        f"custom class {class_name!r} from module {module!r}"
        + (f" (registered as {registered!r})" if registered else ""),
        trust,
    )


def _check_registered_name(class_name: str | None, registered: str | None) -> _Check | None:
    # Keras 3 puts "package>Name" in registered_name; Keras 2 puts it in class_name.
    for name in (registered, class_name):
        if name and ">" in name and not _keras_registration(name):
            return (
                "custom_object",
                f"custom object {name!r}",
                _trust_keys(class_name, registered, None, None),
            )
    return None


def _check_string(text: str, key: Any) -> _Check | None:
    if _looks_like_bytecode(text):
        return "lambda", "marshalled Python bytecode (base64)", _NOT_TRUSTABLE
    if isinstance(key, str) and _is_path_key(key) and text.strip():
        return "file_reference", f"{key!r} names a file: {_quote(text)}", _NOT_TRUSTABLE
    if _URL.match(text):
        return "file_reference", f"URL {_quote(text)}", _NOT_TRUSTABLE
    if _DOTTED_PATH.fullmatch(text):
        hit = _unsafe_component(text)
        if hit or _root(text) in UNSAFE_MODULE_ROOTS:
            return "unsafe_api", f"reference to {text!r}", _NOT_TRUSTABLE
    return None


# ----------------------------------------------------------------------------------------
# Small helpers


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _inner(obj: dict) -> dict:
    inner = obj.get("config")
    return inner if isinstance(inner, dict) else {}


def _quote(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root(module: str) -> str:
    return module.split(".", 1)[0]


def _last_part(reference: str) -> str:
    return reference.rsplit(">", 1)[-1]


def _is_path_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in PATH_KEYS or lowered.endswith(PATH_KEY_SUFFIXES)


def _unsafe_component(reference: str) -> str | None:
    for part in _REFERENCE_SEPARATORS.split(reference):
        if part in UNSAFE_API_NAMES:
            return part
    return None


def _keras_registration(name: str) -> bool:
    package, _, rest = name.partition(">")
    return name in KERAS_REGISTERED_NAMES or (package in KERAS_PACKAGES and rest in KNOWN_CLASS_NAMES)


def _trust_keys(
    class_name: str | None, registered: str | None, function_name: str | None, module: str | None
) -> frozenset[str]:
    keys = {registered, function_name}
    if class_name != "function":
        keys.add(class_name)
        if module and class_name:
            keys.add(f"{module}.{class_name}")
    keys.discard("function")
    return frozenset(key for key in keys if key)


def _looks_like_bytecode(text: str) -> bool:
    """base64 text that decodes to a marshalled code object, as func_dump writes it."""
    if len(text) < _MIN_BYTECODE_TEXT or not _BASE64_TEXT.fullmatch(text):
        return False
    head = "".join(text[:64].split())[:8]  # 8 base64 chars -> 6 bytes
    try:
        decoded = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return False
    # A code object starts with its type byte, then a little-endian int32 argcount, which
    # is small: three zero bytes make this specific enough to rule out ordinary text.
    return (
        len(decoded) >= 5
        and decoded[0] in _MARSHAL_CODE_TYPES
        and decoded[2:5] == b"\x00\x00\x00"
    )
