"""saved_model.pb decoded from the protobuf wire format, only as far as the op scan
(tf_graph.py) needs: `decode_saved_model` -> [MetaGraph] of NodeDef, FunctionDef, SaverDef.
The wire primitives live in savedmodel.py, which imports tf_graph (and so this module) at its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The wire primitives live in savedmodel.py, which imports this module at its end.
from surgery.io.formats.savedmodel import (
    WIRE_LENGTH,
    WIRE_VARINT,
    ProtobufDecodeError,
    as_text,
    expect_wire,
    iter_fields,
    read_varint,
)

# NameAttrList -> AttrValue -> NameAttrList ... may nest without end in a hostile file;
# real graphs nest func attrs two or three levels.
MAX_ATTR_DEPTH = 32


# ----------------------------------------------------------------------------------------
# The decoded graph (only what the scan needs)


@dataclass(frozen=True)
class NodeDef:
    name: str
    op: str
    inputs: tuple[str, ...] = ()
    device: str = ""
    calls: tuple[str, ...] = ()  # function names in func / list(func) attrs, any depth
    strings: dict = field(default_factory=dict)  # attr name -> bytes, for string attrs
    tensor_strings: tuple[bytes, ...] = ()  # a Const's string_val


@dataclass(frozen=True)
class FunctionDef:
    name: str
    input_args: tuple[str, ...]
    nodes: tuple[NodeDef, ...]


@dataclass(frozen=True)
class SaverDef:
    filename_tensor_name: str = ""
    save_tensor_name: str = ""
    restore_op_name: str = ""


@dataclass(frozen=True)
class MetaGraph:
    nodes: tuple[NodeDef, ...] = ()
    functions: tuple[FunctionDef, ...] = ()
    gradients: tuple[tuple[str, str], ...] = ()  # (function_name, gradient_func)
    saver: SaverDef | None = None


def decode_saved_model(data: bytes | memoryview) -> list[MetaGraph]:
    """Decode saved_model.pb; raises ProtobufDecodeError on malformed input."""
    graphs = []
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("SavedModel.saved_model_schema_version", wire_type, WIRE_VARINT)
        elif number == 2:
            expect_wire("SavedModel.meta_graphs", wire_type, WIRE_LENGTH)
            graphs.append(_decode_meta_graph(value))
    return graphs


def _decode_meta_graph(data: memoryview) -> MetaGraph:
    nodes: list[NodeDef] = []
    functions: list[FunctionDef] = []
    gradients: list[tuple[str, str]] = []
    saver = None
    for number, wire_type, value in iter_fields(data):
        if number == 2:
            expect_wire("MetaGraphDef.graph_def", wire_type, WIRE_LENGTH)
            _decode_graph_def(value, nodes, functions, gradients)
        elif number == 3:
            expect_wire("MetaGraphDef.saver_def", wire_type, WIRE_LENGTH)
            saver = _decode_saver_def(value)
    return MetaGraph(tuple(nodes), tuple(functions), tuple(gradients), saver)


def _decode_graph_def(data, nodes, functions, gradients) -> None:
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("GraphDef.node", wire_type, WIRE_LENGTH)
            nodes.append(_decode_node(value))
        elif number == 2:
            expect_wire("GraphDef.library", wire_type, WIRE_LENGTH)
            for lib_number, lib_wire, lib_value in iter_fields(value):
                if lib_number == 1:
                    expect_wire("FunctionDefLibrary.function", lib_wire, WIRE_LENGTH)
                    functions.append(_decode_function(lib_value))
                elif lib_number == 2:
                    expect_wire("FunctionDefLibrary.gradient", lib_wire, WIRE_LENGTH)
                    gradients.append(_decode_gradient(lib_value))


def _string_fields(data: memoryview, message: str, names: dict[int, str]) -> dict[str, str]:
    """The string fields `names` (field number -> name) of a flat message; the last one wins,
    as in protobuf. Other fields are skipped."""
    fields = {}
    for number, wire_type, value in iter_fields(data):
        if number in names:
            expect_wire(f"{message}.{names[number]}", wire_type, WIRE_LENGTH)
            fields[names[number]] = as_text(value, f"{message}.{names[number]}")
    return fields


def _decode_saver_def(data: memoryview) -> SaverDef:
    names = {1: "filename_tensor_name", 2: "save_tensor_name", 3: "restore_op_name"}
    return SaverDef(**_string_fields(data, "SaverDef", names))


def _decode_gradient(data: memoryview) -> tuple[str, str]:
    fields = _string_fields(data, "GradientDef", {1: "function_name", 2: "gradient_func"})
    return fields.get("function_name", ""), fields.get("gradient_func", "")


def _decode_function(data: memoryview) -> FunctionDef:
    name = ""
    input_args: list[str] = []
    nodes: list[NodeDef] = []
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("FunctionDef.signature", wire_type, WIRE_LENGTH)
            for sig_number, sig_wire, sig_value in iter_fields(value):
                if sig_number == 1:
                    expect_wire("OpDef.name", sig_wire, WIRE_LENGTH)
                    name = as_text(sig_value, "OpDef.name")
                elif sig_number == 2:
                    expect_wire("OpDef.input_arg", sig_wire, WIRE_LENGTH)
                    input_args.append(_decode_arg_name(sig_value))
        elif number == 3:
            expect_wire("FunctionDef.node_def", wire_type, WIRE_LENGTH)
            nodes.append(_decode_node(value))
    return FunctionDef(name, tuple(input_args), tuple(nodes))


def _decode_arg_name(data: memoryview) -> str:
    return _string_fields(data, "ArgDef", {1: "name"}).get("name", "")


def _decode_node(data: memoryview) -> NodeDef:
    name = op = device = ""
    inputs: list[str] = []
    calls: list[str] = []
    strings: dict[str, bytes] = {}
    tensor: memoryview | None = None
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("NodeDef.name", wire_type, WIRE_LENGTH)
            name = as_text(value, "NodeDef.name")
        elif number == 2:
            expect_wire("NodeDef.op", wire_type, WIRE_LENGTH)
            op = as_text(value, "NodeDef.op")
        elif number == 3:
            expect_wire("NodeDef.input", wire_type, WIRE_LENGTH)
            inputs.append(as_text(value, "NodeDef.input"))
        elif number == 4:
            expect_wire("NodeDef.device", wire_type, WIRE_LENGTH)
            device = as_text(value, "NodeDef.device")
        elif number == 5:
            expect_wire("NodeDef.attr", wire_type, WIRE_LENGTH)
            key, attr = _decode_map_entry(value, "NodeDef.attr")
            if attr is None or _uninteresting_attr(key, attr):
                continue
            found = _decode_attr_value(attr, calls, 0)
            if found is not None:
                kind, payload = found
                if kind == "s":
                    strings[key] = payload
                elif kind == "tensor" and key == "value":
                    tensor = payload
    tensor_strings = _tensor_strings(tensor) if tensor is not None and op == "Const" else ()
    return NodeDef(name, op, tuple(inputs), device, tuple(calls), strings, tensor_strings)


# AttrValue tag bytes: i (3, varint), f (4, fixed32), b (5), type (6), shape (7, message),
# placeholder (9, string); s (2) and tensor (8) matter only for a few attrs.
_SKIPPED_ATTR_TAGS = frozenset({0x18, 0x25, 0x28, 0x30, 0x3A, 0x4A})
_TAG_S, _TAG_TENSOR = 0x12, 0x42
_STRING_ATTRS = frozenset({"descriptor_source", "separator"})


def _uninteresting_attr(key: str, attr: memoryview) -> bool:
    """True for an attr that is ONE field holding no function name and nothing the scan
    reads (most attrs are types and shapes), so it can be skipped without the generator.

    A value with several fields always goes the long way: protobuf keeps the last member
    of a oneof, so a type followed by a func is a func to TensorFlow.
    """
    if not attr:
        return True
    tag = attr[0]
    if tag == _TAG_S:
        skippable = key not in _STRING_ATTRS
    elif tag == _TAG_TENSOR:
        skippable = key != "value"
    else:
        skippable = tag in _SKIPPED_ATTR_TAGS
    if not skippable:
        return False
    end = len(attr)
    if tag & 7 == WIRE_VARINT:
        _, position = read_varint(attr, 1, end)
    elif tag & 7 == 5:  # fixed32
        position = 5
    else:
        length, position = read_varint(attr, 1, end)
        position += length
    return position == end


def _decode_map_entry(data: memoryview, field_name: str) -> tuple[str, memoryview | None]:
    key, value = "", None
    for number, wire_type, item in iter_fields(data):
        if number == 1:
            expect_wire(f"{field_name}.key", wire_type, WIRE_LENGTH)
            key = as_text(item, f"{field_name}.key")
        elif number == 2:
            expect_wire(f"{field_name}.value", wire_type, WIRE_LENGTH)
            value = item
    return key, value


def _decode_attr_value(data: memoryview, calls: list[str], depth: int):
    """Collect function names into `calls`; return ("s", bytes) or ("tensor", view) or None."""
    if depth > MAX_ATTR_DEPTH:
        raise ProtobufDecodeError(f"function attrs nested deeper than {MAX_ATTR_DEPTH} levels")
    found = None
    for number, wire_type, value in iter_fields(data):
        if number == 2:
            expect_wire("AttrValue.s", wire_type, WIRE_LENGTH)
            found = ("s", bytes(value))
        elif number == 8:
            expect_wire("AttrValue.tensor", wire_type, WIRE_LENGTH)
            found = ("tensor", value)
        elif number == 10:
            expect_wire("AttrValue.func", wire_type, WIRE_LENGTH)
            _decode_name_attr_list(value, calls, depth + 1)
        elif number == 1:
            expect_wire("AttrValue.list", wire_type, WIRE_LENGTH)
            for list_number, list_wire, list_value in iter_fields(value):
                if list_number == 9:
                    expect_wire("ListValue.func", list_wire, WIRE_LENGTH)
                    _decode_name_attr_list(list_value, calls, depth + 1)
    return found


def _decode_name_attr_list(data: memoryview, calls: list[str], depth: int) -> None:
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            expect_wire("NameAttrList.name", wire_type, WIRE_LENGTH)
            calls.append(as_text(value, "NameAttrList.name"))
        elif number == 2:
            expect_wire("NameAttrList.attr", wire_type, WIRE_LENGTH)
            _, attr = _decode_map_entry(value, "NameAttrList.attr")
            if attr is not None:
                _decode_attr_value(attr, calls, depth + 1)


def _tensor_strings(data: memoryview) -> tuple[bytes, ...]:
    values = []
    for number, wire_type, value in iter_fields(data):
        if number == 8:
            expect_wire("TensorProto.string_val", wire_type, WIRE_LENGTH)
            values.append(bytes(value))
    return tuple(values)
