"""SavedModel directories written by tf.keras / tf_keras `model.save(dir, save_format="tf")`.

Keras 2 puts the model's config in `keras_metadata.pb` next to `saved_model.pb`. That
file is a `SavedMetadata` protobuf, decoded here by hand (no protobuf dependency):

    SavedMetadata { repeated SavedObject nodes = 1; }
    SavedObject   { reserved 1; int32 node_id = 2; string node_path = 3;
                    string identifier = 4; string metadata = 5;  // JSON
                    VersionDef version = 6; }
    VersionDef    { int32 producer = 1; int32 min_consumer = 2;
                    repeated int32 bad_consumers = 3; }

(Field numbers checked against tf_keras/protobuf/saved_metadata.proto: SavedObject
starts at 2, field 1 is reserved.)

The root object (node_path "root") is the model; its metadata JSON holds class_name,
config and keras_version, JSON-encoded by tf_keras' json_utils (tuples and TensorShapes
become {"class_name": "__tuple__" | "TensorShape", "items": [...]}, undone here).
tf_keras revives every layer from its OWN node's metadata, not from the root config, so
every node's metadata (the root's whole metadata included) goes to
ModelArtifact.embedded_configs for the safety scan; one that is not JSON is unreadable.
saved_model.pb is decoded too (tf_proto.py, scanned by tf_graph.py): ops that reach outside the model, and
symbolic links or special files anywhere in the directory, become ModelArtifact.hazards.
A SavedModel without keras_metadata.pb (tf.saved_model.save, Keras 3 `model.export()`)
has no Keras config at all and is not supported. Variables (the TF checkpoint) are not
read: weight_shapes stays empty for a SavedModel.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, Iterator

from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError
from surgery.io.formats import (
    check_model_config,
    describe_path,
    parse_json,
    short_repr,
    unreadable,
)
from surgery.io.safety import Finding

KERAS_METADATA_FILE = "keras_metadata.pb"
SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_TEXT_FILE = "saved_model.pbtxt"
MODEL_IDENTIFIERS = ("_tf_keras_network", "_tf_keras_model", "_tf_keras_sequential")
# Metadata of a large model is a few MB, saved_model.pb tens of MB; both are read whole
# under this cap, which bounds memory on a hostile file.
MAX_METADATA_BYTES = 256 << 20
# Bounds the directory walk (a genuine SavedModel holds a handful of files).
MAX_DIRECTORY_ENTRIES = 100_000

WIRE_VARINT, WIRE_FIXED64, WIRE_LENGTH, WIRE_GROUP_START, WIRE_GROUP_END, WIRE_FIXED32 = range(6)
_MAX_VARINT_BYTES = 10


class ProtobufDecodeError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, bad tag, ...)."""


# ----------------------------------------------------------------------------------------
# A minimal protobuf wire-format decoder


def read_varint(data: bytes | memoryview, position: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at `position`; returns (value, next position)."""
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if position >= end:
            raise ProtobufDecodeError(f"truncated varint at byte {position}")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, position
    raise ProtobufDecodeError(f"varint longer than {_MAX_VARINT_BYTES} bytes before {position}")


def iter_fields(
    data: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field of one message.

    value is an int for varint/fixed fields and a memoryview for length-delimited ones
    (strings, bytes, sub-messages, packed repeated fields). Every length is checked
    against the message bounds.
    """
    view = memoryview(data)
    end = len(view) if end is None else end
    position = start
    while position < end:
        tag_at = position
        tag = view[position]
        if tag < 0x80:  # one-byte tags are nearly all of them: skip the call
            position += 1
        else:
            tag, position = read_varint(view, position, end)
        field_number, wire_type = tag >> 3, tag & 0x7
        if field_number == 0:
            raise ProtobufDecodeError(f"field number 0 at byte {tag_at}")
        if wire_type == WIRE_VARINT:
            value, position = read_varint(view, position, end)
            yield field_number, wire_type, value
        elif wire_type in (WIRE_FIXED64, WIRE_FIXED32):
            width = 8 if wire_type == WIRE_FIXED64 else 4
            if position + width > end:
                raise ProtobufDecodeError(f"truncated fixed-width field at byte {position}")
            value = int.from_bytes(view[position : position + width], "little")
            position += width
            yield field_number, wire_type, value
        elif wire_type == WIRE_LENGTH:
            if position < end and view[position] < 0x80:
                length = view[position]
                position += 1
            else:
                length, position = read_varint(view, position, end)
            if length > end - position:
                raise ProtobufDecodeError(
                    f"field {field_number} at byte {tag_at} declares {length} bytes, "
                    f"only {end - position} remain"
                )
            yield field_number, wire_type, view[position : position + length]
            position += length
        else:
            # Groups (3, 4) are long deprecated and never used by these messages.
            raise ProtobufDecodeError(f"unsupported wire type {wire_type} at byte {tag_at}")


def _as_int32(value: int) -> int:
    """int32 fields are varints of the 64-bit two's complement; fold back to signed."""
    value &= (1 << 64) - 1
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def as_text(value: memoryview, field: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtobufDecodeError(f"{field} is not UTF-8 ({error})") from None


def expect_wire(field: str, wire_type: int, expected: int) -> None:
    if wire_type != expected:
        raise ProtobufDecodeError(f"{field} has wire type {wire_type}, expected {expected}")


# ----------------------------------------------------------------------------------------
# The SavedMetadata messages


@dataclass(frozen=True)
class VersionDef:
    producer: int = 0
    min_consumer: int = 0
    bad_consumers: tuple[int, ...] = ()


@dataclass(frozen=True)
class SavedObject:
    node_id: int = 0
    node_path: str = ""
    identifier: str = ""
    metadata: str = ""
    version: VersionDef = VersionDef()


def decode_saved_metadata(data: bytes) -> list[SavedObject]:
    """Decode a keras_metadata.pb; raises ProtobufDecodeError on malformed input."""
    nodes = []
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("SavedMetadata.nodes", wire_type, WIRE_LENGTH)
            nodes.append(_decode_saved_object(value))
        # Unknown fields are skipped, as protobuf readers do.
    return nodes


_SAVED_OBJECT_TEXT_FIELDS = {3: "node_path", 4: "identifier", 5: "metadata"}


def _decode_saved_object(data: memoryview) -> SavedObject:
    fields: dict = {}
    for number, wire_type, value in iter_fields(data):
        if number == 2:
            expect_wire("SavedObject.node_id", wire_type, WIRE_VARINT)
            fields["node_id"] = _as_int32(value)
        elif number in _SAVED_OBJECT_TEXT_FIELDS:
            name = _SAVED_OBJECT_TEXT_FIELDS[number]
            expect_wire(f"SavedObject.{name}", wire_type, WIRE_LENGTH)
            fields[name] = as_text(value, f"SavedObject.{name}")
        elif number == 6:
            expect_wire("SavedObject.version", wire_type, WIRE_LENGTH)
            fields["version"] = _decode_version(value)
    return SavedObject(**fields)


def _decode_version(data: memoryview) -> VersionDef:
    producer = min_consumer = 0
    bad_consumers: list[int] = []
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("VersionDef.producer", wire_type, WIRE_VARINT)
            producer = _as_int32(value)
        elif number == 2:
            expect_wire("VersionDef.min_consumer", wire_type, WIRE_VARINT)
            min_consumer = _as_int32(value)
        elif number == 3:
            bad_consumers.extend(_repeated_int32(value, wire_type))
    return VersionDef(producer, min_consumer, tuple(bad_consumers))


def _repeated_int32(value: int | memoryview, wire_type: int) -> list[int]:
    """A repeated int32 arrives either unpacked (one varint) or packed (a byte run)."""
    if wire_type == WIRE_VARINT:
        return [_as_int32(value)]
    expect_wire("VersionDef.bad_consumers", wire_type, WIRE_LENGTH)
    packed, values, position = value, [], 0
    while position < len(packed):
        item, position = read_varint(packed, position, len(packed))
        values.append(_as_int32(item))
    return values


# ----------------------------------------------------------------------------------------
# Reading a SavedModel directory


def read_savedmodel(path: str) -> ModelArtifact:
    metadata_path = os.path.join(path, KERAS_METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise NotSupportedError(
            f"SavedModel at {describe_path(path)} has no Keras metadata "
            f"({KERAS_METADATA_FILE}): it was not written by Keras 2 model.save; "
            "re-save it from Keras or pass the original .keras/.h5"
        )
    # Links and special files first: nothing below opens a file that is not regular.
    hazards = list(_directory_hazards(path))
    data = _read_capped(path, KERAS_METADATA_FILE)
    try:
        nodes = decode_saved_metadata(data)
    except ProtobufDecodeError as error:
        raise unreadable(path, f"{KERAS_METADATA_FILE} is corrupt ({error})") from None

    root = _root_object(path, nodes)
    metadata = parse_json(
        path, root.metadata, f"{KERAS_METADATA_FILE} root metadata", _plain_json_value
    )
    if not isinstance(metadata, dict):
        raise unreadable(
            path, f"{KERAS_METADATA_FILE} root metadata is {type(metadata).__name__}, not an object"
        )
    if "config" not in metadata:
        raise NotSupportedError(
            f"SavedModel at {describe_path(path)} holds a subclassed Keras model "
            f"({short_repr(metadata.get('class_name'))}) without a config (no get_config); "
            "pass the original .keras/.h5 or re-save it with a config"
        )
    model_config = check_model_config(
        path,
        {"class_name": metadata.get("class_name"), "config": metadata["config"]},
        f"{KERAS_METADATA_FILE} root metadata",
    )
    hazards.extend(_graph_hazards(path))
    keras_version = metadata.get("keras_version")
    return ModelArtifact(
        path=path,
        format="savedmodel",
        family="keras2",
        model_config=model_config,
        keras_version=keras_version if isinstance(keras_version, str) else None,
        embedded_configs=_node_configs(path, nodes, root, metadata),
        hazards=tuple(hazards),
    )


def _node_configs(
    path: str, nodes: list[SavedObject], root: SavedObject, root_metadata: Any
) -> tuple[tuple[str, Any], ...]:
    """Every node's metadata JSON: tf_keras revives each layer from its OWN node's metadata
    (not from the root config), and the root's metadata holds more than model_config
    (training_config: the loss, metrics and optimizer compile() rebuilds)."""
    configs = []
    for node in nodes:
        where = f"{KERAS_METADATA_FILE} node {node.node_id} ({_printable(node.node_path)})"
        if node is root:
            value = root_metadata
        else:
            value = parse_json(path, node.metadata, f"{where} metadata", _plain_json_value)
        configs.append((where, value))
    return tuple(configs)


def _printable(text: str, limit: int = 120) -> str:
    """A node path from the file, safe inside a one-line message."""
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _graph_hazards(path: str) -> list[Finding]:
    """Ops in saved_model.pb that reach outside the model (see tf_graph)."""
    if not os.path.lexists(os.path.join(path, SAVED_MODEL_FILE)):
        # TF's loader falls back to the text format, which this tool does not decode.
        if os.path.lexists(os.path.join(path, SAVED_MODEL_TEXT_FILE)):
            return [Finding(SAVED_MODEL_TEXT_FILE, "savedmodel_op",
                            "a text-format graph the static scan cannot check")]
        raise unreadable(path, f"the SavedModel has no {SAVED_MODEL_FILE}")
    data = _read_capped(path, SAVED_MODEL_FILE)
    try:
        graphs = tf_proto.decode_saved_model(data)
    except ProtobufDecodeError as error:
        raise unreadable(path, f"{SAVED_MODEL_FILE} is corrupt ({error})") from None
    return tf_graph.scan_saved_model(graphs)


def _directory_hazards(path: str) -> Iterator[Finding]:
    """Symbolic links and special files anywhere under the SavedModel directory.

    A link in variables/ or assets/ makes TF read whatever it points at (a secret file
    restored into a variable, then saved out with the model); a FIFO or device blocks or
    never ends. Links are reported, never followed; regular files and directories are fine.
    """
    stack = [""]
    seen = 0
    while stack:
        relative = stack.pop()
        directory = os.path.join(path, relative) if relative else path
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise unreadable(
                path, f"cannot list {relative or '.'} ({error.strerror or error})"
            ) from None
        for entry in entries:
            seen += 1
            if seen > MAX_DIRECTORY_ENTRIES:
                raise unreadable(path, f"the SavedModel holds over {MAX_DIRECTORY_ENTRIES} files")
            name = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_symlink():
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    target = "?"
                yield Finding(_printable(name), "savedmodel_file",
                              f"symbolic link to {_printable(target)}: a loader would follow it")
            elif entry.is_dir(follow_symlinks=False):
                stack.append(name)
            elif not entry.is_file(follow_symlinks=False):
                yield Finding(_printable(name), "savedmodel_file",
                              "special file (FIFO, device or socket), not a regular file")


def _plain_json_value(obj: dict) -> Any:
    """Undo tf_keras' SavedModel JSON encoding of tuples and TensorShapes.

    tf_keras writes the metadata with json_utils.Encoder, which turns a tuple into
    {"class_name": "__tuple__", "items": [...]} and a TensorShape into
    {"class_name": "TensorShape", "items": [...]}; its loader decodes them back. An HDF5
    model_config holds plain lists in the same places, so lists are what we return:
    the config then reads the same whichever file it came from.
    """
    encoded = obj.get("class_name") in ("__tuple__", "TensorShape")
    if encoded and set(obj) == {"class_name", "items"}:
        return obj["items"]  # a list, or None for a TensorShape of unknown rank
    return obj


def _read_capped(path: str, name: str) -> bytes:
    """Read one file of the SavedModel whole, refusing FIFOs/devices and huge files."""
    file_path = os.path.join(path, name)
    try:
        status = os.stat(file_path)  # a link was already reported; read its target
    except OSError as error:
        raise unreadable(path, f"cannot access {name} ({error.strerror or error})") from None
    if not stat.S_ISREG(status.st_mode):
        raise unreadable(path, f"{name} is not a regular file")
    with open(file_path, "rb") as handle:
        data = handle.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise unreadable(path, f"{name} is larger than {MAX_METADATA_BYTES} bytes")
    return data


def _root_object(path: str, nodes: list[SavedObject]) -> SavedObject:
    roots = [node for node in nodes if node.node_path == "root"]
    if not roots:
        raise unreadable(
            path, f"{KERAS_METADATA_FILE} has no root object ({len(nodes)} objects decoded)"
        )
    if len(roots) > 1:
        raise unreadable(path, f"{KERAS_METADATA_FILE} has {len(roots)} root objects")
    root = roots[0]
    if root.identifier not in MODEL_IDENTIFIERS:
        raise NotSupportedError(
            f"SavedModel at {describe_path(path)} holds a Keras "
            f"{short_repr(root.identifier)} object, not a model; "
            "only saved Keras models can be read"
        )
    return root


# tf_graph and tf_proto import the wire decoder above, so this import must stay at the end.
from surgery.io.formats import tf_graph, tf_proto  # noqa: E402
