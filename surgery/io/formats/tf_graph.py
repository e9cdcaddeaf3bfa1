"""Static scan of a SavedModel's `saved_model.pb` for ops that reach outside the model.

Loading a SavedModel builds every function in its graph library; some ops in those
functions read or write files (ReadFile, WriteFile, readers, file datasets, checkpoint
ops, summary writers, PrintV2 to a file), run Python (PyFunc), talk to other hosts or
devices (RPC, Send/Recv, collectives, TPU feeds) or change process state. This module
decodes the graph by hand (no TensorFlow, no protobuf) and names every such op:

    SavedModel        { int64 saved_model_schema_version = 1; repeated MetaGraphDef meta_graphs = 2; }
    MetaGraphDef      { GraphDef graph_def = 2; SaverDef saver_def = 3; ... }
    SaverDef          { string filename_tensor_name = 1; string save_tensor_name = 2;
                        string restore_op_name = 3; ... }
    GraphDef          { repeated NodeDef node = 1; FunctionDefLibrary library = 2; ... }
    FunctionDefLibrary{ repeated FunctionDef function = 1; repeated GradientDef gradient = 2; }
    GradientDef       { string function_name = 1; string gradient_func = 2; }
    FunctionDef       { OpDef signature = 1; repeated NodeDef node_def = 3; ... }
    OpDef             { string name = 1; repeated ArgDef input_arg = 2; ... }   ArgDef { string name = 1; }
    NodeDef           { string name = 1; string op = 2; repeated string input = 3;
                        string device = 4; map<string, AttrValue> attr = 5; }
    AttrValue         { ListValue list = 1; bytes s = 2; TensorProto tensor = 8;
                        NameAttrList func = 10; ... }
    ListValue         { repeated bytes s = 2; repeated NameAttrList func = 9; ... }
    NameAttrList      { string name = 1; map<string, AttrValue> attr = 2; }
    TensorProto       { repeated bytes string_val = 8; ... }

(field numbers from tensorflow/core/protobuf/{saved_model,meta_graph,saver}.proto and
tensorflow/core/framework/{graph,function,node_def,attr_value,op_def,tensor}.proto.)

Policy: a DENYLIST of op names (exact names plus families matched by pattern), and why
not an allowlist:
- A graph can only run ops registered in the loading process; TensorFlow refuses to
  import a graph naming any other op, and a saved file cannot register ops. So an op name
  unknown to us is not a hazard by itself: the question is only which REGISTERED ops do
  I/O, and that is a finite, reviewable part of TF's registry.
- Genuine models use hundreds of distinct compute ops (tf_keras' TFOpLambda can call any
  TensorFlow function), so an allowlist would have to be the whole registry (~1900 ops)
  minus the I/O ones: the same classification, ~30 KB of names, and a false alarm for
  every op a newer TensorFlow adds.
- The I/O ops come in families with telling names (…Reader, Reader…, …Dataset sources,
  Write…Summary, Debug…, Rpc…, Collective…, …TPU…, Infeed/Outfeed, Send/Recv), so the
  patterns below also catch new V2/V3/Experimental variants of a family.
  tests/test_safety_savedmodel.py re-checks this list against the installed TF's registry.
Function references are followed too: a node whose op is a library function, and every
function named in an attr (If/While/PartitionedCall/dataset functions), must be a library
function; any other name there is looked up as an op (TF runs a primitive op named as
a function), so `StatefulPartitionedCall(f="ReadFile")` is caught.

The one exception: TF2 SavedModels carry the checkpoint functions TensorFlow traces
itself, `__inference__traced_save_<n>` (SaveV2, ShardedFilename, MergeV2Checkpoints) and
`__inference__traced_restore_<n>` (RestoreV2), called from the graph nodes the SaverDef
names. Those ops are allowed exactly there, only with the paths derived from the
function's `file_prefix` argument as TF builds them, and the functions may be called from
nowhere else. Decoding is linear in the file size: each nesting level walks its own
bytes once and nesting depth is bounded.

The decoding of saved_model.pb into MetaGraph/NodeDef/FunctionDef is in tf_proto.py.
"""

from __future__ import annotations

import re

from surgery.io.safety import Finding
from surgery.io.formats.tf_proto import FunctionDef, MetaGraph, NodeDef



SAVED_MODEL_PB = "saved_model.pb"
FINDING_KIND = "savedmodel_op"

# ----------------------------------------------------------------------------------------
# The op policy

_FILES_READ = "reads files"
_FILES_WRITE = "writes files"
_CHECKPOINT = "reads or writes checkpoint files"
_PYTHON = "runs Python code"
_NETWORK = "talks to other hosts or devices"
_TPU = "drives TPU hosts (infeed/outfeed, embedding, system setup)"
_PROCESS = "changes or reads state shared across the process"
_OPAQUE = "runs a serialized program the scan cannot inspect"

DENIED_OPS: dict[str, str] = {
    # Files
    "ReadFile": _FILES_READ,
    "WriteFile": _FILES_WRITE,
    "MatchingFiles": "lists files",
    "ImmutableConst": "maps a file into memory",
    "InitializeTableFromTextFile": _FILES_READ,
    "InitializeTableFromTextFileV2": _FILES_READ,
    "RecordInput": _FILES_READ,
    "GenerateVocabRemapping": _FILES_READ,
    "FileSystemSetConfiguration": "reconfigures the file system",
    "DumpTensor": _FILES_WRITE,
    "CalibrationStatisticsSaver": _FILES_WRITE,
    # Checkpoints
    "Save": _CHECKPOINT,
    "SaveV2": _CHECKPOINT,
    "SaveSlices": _CHECKPOINT,
    "Restore": _CHECKPOINT,
    "RestoreV2": _CHECKPOINT,
    "RestoreSlice": _CHECKPOINT,
    "MergeV2Checkpoints": _CHECKPOINT,
    "ShardedFilename": "builds checkpoint file names",
    "ShardedFilespec": "builds checkpoint file names",
    "LoadAndRemapMatrix": _CHECKPOINT,
    "DTensorRestoreV2": _CHECKPOINT,
    # tf.data sources and sinks that touch files or the network
    "TFRecordDataset": _FILES_READ,
    "TFRecordDatasetV2": _FILES_READ,
    "TextLineDataset": _FILES_READ,
    "FixedLengthRecordDataset": _FILES_READ,
    "FixedLengthRecordDatasetV2": _FILES_READ,
    "CSVDataset": _FILES_READ,
    "CSVDatasetV2": _FILES_READ,
    "ExperimentalCSVDataset": _FILES_READ,
    "SqlDataset": "opens a database",
    "ExperimentalSqlDataset": "opens a database",
    "LMDBDataset": _FILES_READ,
    "ExperimentalLMDBDataset": _FILES_READ,
    "MatchingFilesDataset": "lists files",
    "ExperimentalMatchingFilesDataset": "lists files",
    "SnapshotDataset": "reads and writes snapshot files",
    "SnapshotDatasetV2": "reads and writes snapshot files",
    "SnapshotDatasetReader": _FILES_READ,
    "SnapshotNestedDatasetReader": _FILES_READ,
    "SnapshotChunkDataset": _FILES_READ,
    "ListSnapshotChunksDataset": "lists files",
    "DistributedSave": _FILES_WRITE,
    "SaveDataset": _FILES_WRITE,
    "SaveDatasetV2": _FILES_WRITE,
    "LoadDataset": _FILES_READ,
    "DatasetToTFRecord": _FILES_WRITE,
    "ExperimentalDatasetToTFRecord": _FILES_WRITE,
    "CacheDataset": "caches to files",
    "CacheDatasetV2": "caches to files",
    "DatasetFromGraph": "builds a dataset from a graph hidden in a string",
    "RegisterDataset": _NETWORK,
    "RegisterDatasetV2": _NETWORK,
    "IteratorFromStringHandle": _PROCESS,
    "IteratorFromStringHandleV2": _PROCESS,
    "MultiDeviceIteratorFromStringHandle": _PROCESS,
    # Summaries and logging
    "CreateSummaryFileWriter": _FILES_WRITE,
    "CreateSummaryDbWriter": _FILES_WRITE,
    "SummaryWriter": _FILES_WRITE,
    "FlushSummaryWriter": _FILES_WRITE,
    "CloseSummaryWriter": _FILES_WRITE,
    "ImportEvent": _FILES_WRITE,
    "StatsAggregatorSetSummaryWriter": _FILES_WRITE,
    "Print": "prints to the process' stderr",
    "PrintV2": "prints to stderr or writes a file",
    # Python
    "PyFunc": _PYTHON,
    "PyFuncStateless": _PYTHON,
    "EagerPyFunc": _PYTHON,
    # Other hosts and devices
    "RemoteCall": _NETWORK,
    "CrossReplicaSum": _NETWORK,
    "AllToAll": _NETWORK,
    "WorkerHeartbeat": _NETWORK,
    "XlaAllReduce": _NETWORK,
    "XlaReduceScatter": _NETWORK,
    "XlaSend": _NETWORK,
    "XlaRecv": _NETWORK,
    "XlaSendToHost": _NETWORK,
    "XlaRecvFromHost": _NETWORK,
    "XlaHostCompute": _NETWORK,
    "_XlaHostComputeMlir": _NETWORK,
    "_XlaSendFromHost": _NETWORK,
    "_XlaSendFromHostV2": _NETWORK,
    "_XlaRecvAtHost": _NETWORK,
    "_XlaRecvAtHostV2": _NETWORK,
    # Process state
    "Abort": "aborts the process",
    "GetSessionHandle": _PROCESS,
    "GetSessionHandleV2": _PROCESS,
    "GetSessionTensor": _PROCESS,
    "DeleteSessionTensor": _PROCESS,
    # Opaque programs
    "XlaCallModule": _OPAQUE,
    "XlaCustomCall": _OPAQUE,
    "XlaCustomCallV2": _OPAQUE,
}

# Families, so that V2/V3/Experimental variants (and future ones) are caught too.
DENIED_OP_PATTERNS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\w*Reader(V\d+)?"), "reads files (reader op)"),  # TextLineReader, ...
    (re.compile(r"Reader[A-Z]\w*"), "reads files (reader op)"),  # ReaderReadV2, ...
    (re.compile(r"Write\w*Summary(V\d+)?"), "writes summaries to files"),
    (re.compile(r"Debug[A-Z]\w*"), "writes debug dumps to files or URLs"),
    (re.compile(r"(Try)?Rpc\w*|DeleteRpcFutureResource"), "calls a remote server (RPC)"),
    (re.compile(r"DataService\w*"), _NETWORK),
    (re.compile(r"_?(Host)?(Send|Recv)(V\d+)?"), _NETWORK),
    (re.compile(r"Collective\w*"), _NETWORK),
    (re.compile(r"_?Nccl\w*"), _NETWORK),
    (re.compile(r"_?\w*(TPU|Tpu)\w*"), _TPU),
    (re.compile(r"(Infeed|Outfeed|Prelinearize)\w*"), _TPU),
)

# DecodeProtoV2 / EncodeProto read a descriptor file unless the source is the built-in
# pool ("local://", the default) or inline bytes ("bytes://...").
_DESCRIPTOR_OPS = frozenset({"DecodeProtoV2", "EncodeProto"})

# What TF puts in its own traced checkpoint functions (tensorflow/python/checkpoint/
# functional_saver.py): the I/O ops each one may hold.
_TRACED_FUNCTION = re.compile(r"__inference__traced_(save|restore)_\d+")
_CHECKPOINT_IO = {"save": frozenset({"SaveV2", "ShardedFilename", "MergeV2Checkpoints"}),
                  "restore": frozenset({"RestoreV2"})}
_CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})


def op_hazard(op: str, string_attrs: dict[str, bytes] | None = None) -> str | None:
    """Why running `op` reaches outside the model, or None when it is plain computation."""
    reason = DENIED_OPS.get(op)
    if reason is not None:
        return reason
    for pattern, reason in DENIED_OP_PATTERNS:
        if pattern.fullmatch(op):
            return reason
    if op in _DESCRIPTOR_OPS:
        source = (string_attrs or {}).get("descriptor_source", b"local://")
        if source != b"local://" and not source.startswith(b"bytes://"):
            return f"reads the proto descriptor file {_printable(source)}"
    return None




# ----------------------------------------------------------------------------------------
# The scan


def scan_saved_model(graphs: list[MetaGraph]) -> list[Finding]:
    """Every op in the decoded SavedModel that reaches outside the model, in file order."""
    findings: list[Finding] = []
    for index, graph in enumerate(graphs):
        prefix = SAVED_MODEL_PB + ":" + (f"meta_graphs[{index}]/" if len(graphs) > 1 else "")
        findings.extend(_scan_meta_graph(graph, prefix))
    return findings


def _scan_meta_graph(graph: MetaGraph, prefix: str) -> list[Finding]:
    library = {function.name: function for function in graph.functions}
    traced, saver_calls = _checkpoint_functions(graph, library)
    findings: list[Finding] = []

    def report(owner: str, node_name: str, detail: str) -> None:
        path = f"{prefix}{_name(owner)}/{_name(node_name)}"
        findings.append(Finding(path, FINDING_KIND, detail))

    def check_reference(owner: str, node: NodeDef, target: str, how: str, top: bool) -> None:
        if target in traced:
            if not (top and saver_calls.get(node.name) == target):
                report(owner, node.name,
                       f"{how} TensorFlow's checkpoint function {_printable(target)} "
                       "outside the saver")
        elif target not in library:
            # Not a library function: TF would run the registered op of that name.
            reason = op_hazard(target)
            if reason is not None:
                report(owner, node.name, f"{how} op {_printable(target)} by name, which {reason}")

    def scan_nodes(owner: str, nodes: tuple[NodeDef, ...], function: FunctionDef | None):
        top = function is None  # the graph's own nodes, where the saver's calls live
        allowed = _allowed_checkpoint_nodes(function, traced) if function else frozenset()
        for node in nodes:
            reason = op_hazard(node.op, node.strings)
            if reason is not None and node.name not in allowed:
                report(owner, node.name, f"op {_printable(node.op)} {reason}")
            elif node.op in library or node.op in traced:
                check_reference(owner, node, node.op, "calls", top)
            for target in node.calls:
                check_reference(owner, node, target, "attr calls", top)
            remote = _remote_job(node.device)
            if remote:
                report(owner, node.name,
                       f"node placed on device {_printable(node.device)} of job "
                       f"{_printable(remote)}, {_NETWORK}")

    scan_nodes("graph", graph.nodes, None)
    for function in graph.functions:
        scan_nodes(function.name, function.nodes, function)
    for function_name, gradient in graph.gradients:
        if gradient in traced:
            report("gradients", function_name,
                   f"gradient is TensorFlow's checkpoint function {_printable(gradient)}")
        elif gradient not in library and op_hazard(gradient):
            report("gradients", function_name,
                   f"gradient is op {_printable(gradient)}, which {op_hazard(gradient)}")
    return findings


def _checkpoint_functions(
    graph: MetaGraph, library: dict[str, FunctionDef]
) -> tuple[dict[str, str], dict[str, str]]:
    """TF's traced save/restore functions and the saver nodes allowed to call them.

    Returns ({function name: "save" | "restore"}, {graph node name: function name}).
    A function counts only if the SaverDef's own node calls it, its name is the one TF
    gives it, and it matches the role (the save tensor's node calls a save function).
    """
    traced: dict[str, str] = {}
    callers: dict[str, str] = {}
    if graph.saver is None:
        return traced, callers
    by_name = {node.name: node for node in graph.nodes}
    for role, tensor in (("save", graph.saver.save_tensor_name),
                         ("restore", graph.saver.restore_op_name)):
        node = by_name.get(_producer(tensor))
        if node is None or node.op not in _CALL_OPS or len(node.calls) != 1:
            continue
        target = node.calls[0]
        match = _TRACED_FUNCTION.fullmatch(target)
        if match and match.group(1) == role and target in library and target not in traced:
            traced[target] = role
            callers[node.name] = target
    return traced, callers


def _allowed_checkpoint_nodes(function: FunctionDef, traced: dict[str, str]) -> frozenset[str]:
    """The checkpoint-op nodes of a traced function that use the paths TF builds.

    TF's save function writes `<file_prefix><suffix>` shards (StringJoin of the prefix and
    a Select between two constant suffixes, ShardedFilename, SaveV2) and merges them into
    `file_prefix`; its restore function reads `file_prefix`. A checkpoint op whose path
    comes from anywhere else (a constant, another op) is not allowed.
    """
    role = traced.get(function.name)
    if role is None or not function.input_args:
        return frozenset()
    prefix = function.input_args[0]
    nodes = {node.name: node for node in function.nodes}
    if len(nodes) != len(function.nodes) or prefix in nodes:
        return frozenset()  # duplicate names: which node an input means is ambiguous

    def data_inputs(node: NodeDef) -> list[str]:
        return [_producer(text) for text in node.inputs if not text.startswith("^")]

    def is_suffix(name: str) -> bool:
        # Select(StaticRegexFullMatch(prefix), Const, Const) with harmless suffixes.
        node = nodes.get(name)
        if node is None or node.op != "Select":
            return False
        condition, *branches = data_inputs(node) or [""]
        test = nodes.get(condition)
        if test is None or test.op != "StaticRegexFullMatch" or data_inputs(test) != [prefix]:
            return False
        return len(branches) == 2 and all(_safe_suffix_const(nodes.get(b)) for b in branches)

    def is_shard_name(name: str) -> bool:
        node = nodes.get(name)
        if node is None or node.op != "ShardedFilename":
            return False
        inputs = data_inputs(node)
        join = nodes.get(inputs[0]) if inputs else None
        if join is None or join.op != "StringJoin" or join.strings.get("separator", b""):
            return False
        parts = data_inputs(join)
        return len(parts) == 2 and parts[0] == prefix and is_suffix(parts[1])

    allowed = set()
    for node in function.nodes:
        if node.op not in _CHECKPOINT_IO[role]:
            continue
        inputs = data_inputs(node)
        if node.op == "RestoreV2":
            ok = bool(inputs) and inputs[0] == prefix
        elif node.op == "ShardedFilename":
            ok = is_shard_name(node.name)
        elif node.op == "SaveV2":
            ok = bool(inputs) and is_shard_name(inputs[0])
        else:  # MergeV2Checkpoints(checkpoint_prefixes=Pack(shards...), destination_prefix)
            pack = nodes.get(inputs[0]) if inputs else None
            ok = (len(inputs) == 2 and inputs[1] == prefix and pack is not None
                  and pack.op == "Pack" and all(is_shard_name(i) for i in data_inputs(pack)))
        if ok:
            allowed.add(node.name)
    return frozenset(allowed)


def _safe_suffix_const(node: NodeDef | None) -> bool:
    """TF's shard suffixes are ".part" and "_temp/part" (or "_temp_<uuid>/part")."""
    if node is None or node.op != "Const" or len(node.tensor_strings) != 1:
        return False
    return re.fullmatch(rb"[A-Za-z0-9_.]*(/part)?", node.tensor_strings[0]) is not None and (
        b".." not in node.tensor_strings[0]
    )


def _producer(tensor_name: str) -> str:
    """'node:output:0' / 'node:0' / 'node' -> 'node' (inputs name the producing node)."""
    return tensor_name.lstrip("^").split(":", 1)[0]


def _remote_job(device: str) -> str | None:
    match = re.search(r"/job:([^/]*)", device)
    if match and match.group(1) != "localhost":
        return match.group(1)
    return None


def _printable(value: str | bytes, limit: int = 120) -> str:
    """A name from the file, quoted, escaped and capped for a one-line message."""
    text = repr(value)
    if isinstance(value, bytes):
        text = text[1:]
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _name(value: str, limit: int = 120) -> str:
    """A function or node name for a finding path: as is when printable, else escaped."""
    text = value if value.isprintable() else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
