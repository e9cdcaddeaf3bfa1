"""SavedModel safety: every node's Keras metadata, ops in saved_model.pb, links in the directory.

Real tf_keras SavedModels are saved once per session and tampered the way an attacker
would: a Lambda in a CHILD node's metadata only (the root config stays genuine), file,
Python and checkpoint ops added to a real graph function, a symlink in variables/. The real
CLI must refuse each with exit 3, one line on stderr, nothing written and nothing run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from surgery.errors import UnreadableModelError
from surgery.io.formats import read_artifact, tf_graph, tf_proto
from surgery.io.formats.savedmodel import KERAS_METADATA_FILE, decode_saved_metadata
from surgery.io.safety import UnsafeContentError, ensure_artifact_safe, scan_config

try:
    from tests import malicious
except ImportError:  # tests/ is not a package: pytest put it on sys.path itself
    import malicious

SECRET_MARKER = "SECRET-MARKER-7f3a91"


# ----------------------------------------------------------------------------------------
# Building and tampering


@pytest.fixture(scope="session")
def reference_models(tmp_path_factory):
    return malicious.build_reference_models(tmp_path_factory.getbasetemp() / "reference_models")


@pytest.fixture(scope="module")
def broad_savedmodel(tmp_path_factory):
    """Functional tf_keras model with a nested model, Bidirectional and RNN(cell)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras

    path = tmp_path_factory.mktemp("broad") / "broad_savedmodel"
    inner_in = tf_keras.Input((5, 3))
    inner = tf_keras.Model(inner_in, tf_keras.layers.Dense(3)(inner_in), name="inner")
    inputs = tf_keras.Input((5, 3))
    x = tf_keras.layers.Masking()(inputs)
    x = inner(x)
    x = tf_keras.layers.Bidirectional(tf_keras.layers.SimpleRNN(2, return_sequences=True))(x)
    x = tf_keras.layers.RNN(tf_keras.layers.GRUCell(2))(x)
    model = tf_keras.Model(inputs, x, name="broad")
    model.compile("adam", "mse")
    model.save(str(path), save_format="tf")
    return path


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def encode_metadata(nodes) -> bytes:
    """keras_metadata.pb from decoded SavedObjects (see surgery/io/formats/savedmodel.py)."""
    out = b""
    for node in nodes:
        version = varint(1 << 3) + varint(node.version.producer) + varint(2 << 3) + varint(
            node.version.min_consumer)
        body = (varint(2 << 3) + varint(node.node_id) + length_field(3, node.node_path.encode())
                + length_field(4, node.identifier.encode())
                + length_field(5, node.metadata.encode()) + length_field(6, version))
        out += length_field(1, body)
    return out


def copy_model(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination


def with_child_metadata(source: Path, destination: Path, node_path: str, change) -> Path:
    """Copy a SavedModel and rewrite ONE child node's metadata JSON with change(dict)."""
    copy_model(source, destination)
    metadata_file = destination / KERAS_METADATA_FILE
    nodes = decode_saved_metadata(metadata_file.read_bytes())
    assert node_path in [node.node_path for node in nodes] and node_path != "root"
    rewritten = []
    for node in nodes:
        if node.node_path == node_path:
            metadata = change(json.loads(node.metadata))
            text = metadata if isinstance(metadata, str) else json.dumps(metadata)
            node = type(node)(node.node_id, node.node_path, node.identifier, text, node.version)
        rewritten.append(node)
    metadata_file.write_bytes(encode_metadata(rewritten))
    return destination


def lambda_metadata(canary: Path):
    """Turn a layer node's metadata into a Lambda of the same name whose bytecode writes
    the canary (an identity otherwise, so the model still builds)."""

    def change(metadata: dict) -> dict:
        lambda_config = malicious.k2_lambda(canary, name=metadata["name"])["config"]
        metadata["class_name"] = "Lambda"
        metadata["config"] = lambda_config
        return metadata

    return change


def with_graph_nodes(source: Path, destination: Path, build_nodes, function: str | None = None):
    """Copy a SavedModel and add NodeDefs (built by build_nodes(function_def)) to one
    function of its graph library: by default the serving signature's wrapper."""
    from tensorflow.core.protobuf import saved_model_pb2

    copy_model(source, destination)
    pb = destination / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb.read_bytes())
    library = saved_model.meta_graphs[0].graph_def.library
    if function is None:
        function = next(f.signature.name for f in library.function
                        if f.signature.name.startswith("__inference_signature_wrapper"))
    target = next(f for f in library.function if f.signature.name == function)
    build_nodes(target)
    pb.write_bytes(saved_model.SerializeToString())
    return destination


def const_string(function_def, name: str, value: str):
    node = function_def.node_def.add(name=name, op="Const")
    node.attr["dtype"].type = 7  # DT_STRING
    node.attr["value"].tensor.dtype = 7
    node.attr["value"].tensor.string_val.append(value.encode())
    return f"{name}:output:0"


def add_read_file(secret: Path):
    def build(function_def):
        filename = const_string(function_def, "leak/filename", str(secret))
        function_def.node_def.add(name="leak/ReadFile", op="ReadFile", input=[filename])
    return build


def add_write_file(canary: Path):
    def build(function_def):
        filename = const_string(function_def, "drop/filename", str(canary))
        contents = const_string(function_def, "drop/contents", "payload ran")
        function_def.node_def.add(name="drop/WriteFile", op="WriteFile", input=[filename, contents])
    return build


def add_py_func(function_def):
    token = const_string(function_def, "py/arg", "x")
    node = function_def.node_def.add(name="py/PyFunc", op="PyFunc", input=[token])
    node.attr["token"].s = b"pyfunc_0"
    node.attr["Tin"].list.type.append(7)


def add_save_v2(canary: Path):
    def build(function_def):
        prefix = const_string(function_def, "ckpt/prefix", str(canary))
        names = const_string(function_def, "ckpt/names", "x")
        slices = const_string(function_def, "ckpt/slices", "")
        function_def.node_def.add(name="ckpt/SaveV2", op="SaveV2",
                                  input=[prefix, names, slices, names])
    return build


def add_call_by_name(op: str):
    def build(function_def):
        node = function_def.node_def.add(name="call/op", op="StatefulPartitionedCall")
        node.attr["f"].func.name = op
    return build


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    path = tmp_path_factory.mktemp("home") / "secret.txt"
    path.write_text(SECRET_MARKER)
    return path


@pytest.fixture(scope="module")
def tampered(reference_models, secret, tmp_path_factory):
    """name -> (SavedModel directory, canary path, text the refusal must name)."""
    source = reference_models["tk_savedmodel"]  # Sequential: Masking, LSTM; with traces
    directory = tmp_path_factory.mktemp("tampered")
    canary = {name: directory / f"{name}.canary" for name in
              ("child_lambda", "cell_lambda", "write_file", "save_v2")}
    cases = {
        "child_lambda": (
            with_child_metadata(source, directory / "child_lambda", "root.layer-0",
                                lambda_metadata(canary["child_lambda"])),
            canary["child_lambda"], "lambda"),
        "cell_lambda": (
            with_child_metadata(source, directory / "cell_lambda", "root.layer_with_weights-0.cell",
                                lambda_metadata(canary["cell_lambda"])),
            canary["cell_lambda"], "lambda"),
        "read_file": (with_graph_nodes(source, directory / "read_file", add_read_file(secret)),
                      None, "'ReadFile' reads files"),
        "write_file": (
            with_graph_nodes(source, directory / "write_file", add_write_file(canary["write_file"])),
            canary["write_file"], "'WriteFile' writes files"),
        "py_func": (with_graph_nodes(source, directory / "py_func", add_py_func),
                    None, "'PyFunc' runs Python code"),
        "save_v2_outside_saver": (
            with_graph_nodes(source, directory / "save_v2", add_save_v2(canary["save_v2"])),
            canary["save_v2"], "'SaveV2'"),
        "read_file_called_by_name": (
            with_graph_nodes(source, directory / "by_name", add_call_by_name("ReadFile")),
            None, "op 'ReadFile' by name"),
    }
    link_case = copy_model(source, directory / "variables_symlink")
    os.symlink(secret, link_case / "variables" / "secret.txt")
    cases["variables_symlink"] = (link_case, None, "symbolic link")
    return cases


# ----------------------------------------------------------------------------------------
# The real CLI refuses every tampered SavedModel


def cli(*args, cwd=None):
    exe = shutil.which("lstm-surgery")
    command = [exe] if exe else [sys.executable, str(ROOT / "cli.py")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=env)


def tree_digest(path: Path) -> str:
    """Names, link targets and contents of everything under `path` (links not followed)."""
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        digest.update(str(item.relative_to(path)).encode())
        if item.is_symlink():
            digest.update(os.readlink(item).encode())
        elif item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()


def assert_refused(result, needle: str):
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert SECRET_MARKER not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


CASES = ["child_lambda", "cell_lambda", "read_file", "write_file", "py_func",
         "save_v2_outside_saver", "read_file_called_by_name", "variables_symlink"]
VERIFY_CASES = ("child_lambda", "read_file", "variables_symlink")


@pytest.mark.parametrize("name", CASES)
def test_cli_refuses_tampered_savedmodel(name, tampered, tmp_path):
    model, canary, needle = tampered[name]
    before = tree_digest(model)
    outputs = tmp_path / "outputs"
    outputs.mkdir()

    result = cli("expose-state", model, "-o", outputs / "exposed.keras")
    assert_refused(result, needle)
    if name != "variables_symlink":  # the loader's private copy refuses links for good
        assert "--unsafe" in result.stderr
    if name in VERIFY_CASES:  # each CLI run costs seconds: a sample of the other command
        result = cli("verify", model, FIXTURES / "keras2" / "k2_savedmodel")
        assert_refused(result, needle)

    assert not list(outputs.iterdir())
    assert tree_digest(model) == before
    if canary is not None:
        assert not canary.exists()


def test_child_node_refusal_names_the_node(tampered):
    model, _, _ = tampered["child_lambda"]
    artifact = read_artifact(model)
    # The root config is untouched: only the child node's own metadata carries the Lambda.
    assert scan_config(artifact.model_config) == []
    with pytest.raises(UnsafeContentError) as error:
        ensure_artifact_safe(artifact)
    message = str(error.value)
    assert "lambda" in message and "keras_metadata.pb node 1 (root.layer-0)" in message
    ensure_artifact_safe(artifact, allow_unsafe=True)  # --unsafe opts in


@pytest.mark.parametrize("name", ["read_file", "variables_symlink"])
def test_hazard_paths_and_unsafe_opt_in(name, tampered):
    model, _, _ = tampered[name]
    artifact = read_artifact(model)
    [finding] = artifact.hazards
    if name == "read_file":
        assert finding.kind == "savedmodel_op"
        assert finding.path.startswith("saved_model.pb:__inference_signature_wrapper_")
        assert finding.path.endswith("/leak/ReadFile")
        assert finding.detail == "op 'ReadFile' reads files"
    else:
        assert (finding.path, finding.kind) == ("variables/secret.txt", "savedmodel_file")
    with pytest.raises(UnsafeContentError):
        ensure_artifact_safe(artifact)
    ensure_artifact_safe(artifact, allow_unsafe=True)


def test_inspect_reads_tampered_savedmodel_statically(tampered):
    """inspect never loads the model: the Lambda cannot run, whatever the exit code."""
    model, canary, _ = tampered["child_lambda"]
    result = cli("inspect", model)
    assert result.returncode in (0, 3), result.stderr
    assert not canary.exists()


def test_child_metadata_that_is_not_json_is_unreadable(reference_models, tmp_path):
    model = with_child_metadata(reference_models["tk_savedmodel"], tmp_path / "sm",
                                "root.layer_with_weights-0", lambda _: "{not json")
    with pytest.raises(UnreadableModelError, match="node 2 .*not valid JSON"):
        read_artifact(model)
    for args in (("inspect", model), ("expose-state", model, "-o", tmp_path / "o.keras")):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.keras").exists()


# ----------------------------------------------------------------------------------------
# Plain tf_keras on the same file: the child-node case is real


def test_plain_tf_keras_runs_the_child_node_lambda(tampered, tmp_path):
    model, canary, _ = tampered["child_lambda"]
    fresh_canary = tmp_path / "plain.canary"
    # Same file, but the payload writes a canary of this test (the fixture's stays absent).
    copy = with_child_metadata(model, tmp_path / "copy", "root.layer-0", lambda_metadata(fresh_canary))
    code = (
        "import tf_keras; "
        f"tf_keras.models.load_model({str(copy)!r}); "
        "print('loaded')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert fresh_canary.read_text() == "payload ran"
    assert not canary.exists()


# ----------------------------------------------------------------------------------------
# No false alarms on genuine SavedModels


def genuine_savedmodels(reference_models, broad_savedmodel):
    models = {name: reference_models[name] for name in ("tk_savedmodel", "tk_savedmodel_no_traces")}
    models["broad"] = broad_savedmodel
    for path in sorted((FIXTURES / "keras2").iterdir()):
        if (path / "saved_model.pb").exists():
            models[f"fixtures/keras2/{path.name}"] = path
    return models


def test_genuine_savedmodels_raise_no_finding(reference_models, broad_savedmodel):
    models = genuine_savedmodels(reference_models, broad_savedmodel)
    assert "fixtures/keras2/k2_savedmodel" in models
    for name, path in models.items():
        artifact = read_artifact(path)
        assert artifact.hazards == (), (name, artifact.hazards)
        node_paths = [where for where, _ in artifact.embedded_configs]
        assert len(node_paths) == len(decode_saved_metadata((path / KERAS_METADATA_FILE).read_bytes()))
        for where, config in artifact.embedded_configs:
            assert scan_config(config) == [], (name, where)
        ensure_artifact_safe(artifact)


def test_broad_model_scans_nested_bidirectional_and_cell_nodes(broad_savedmodel):
    wheres = " ".join(where for where, _ in read_artifact(broad_savedmodel).embedded_configs)
    for part in ("root.layer_with_weights-0.layer_with_weights-0", "forward_layer",
                 "backward_layer", ".cell", "root.keras_api.metrics"):
        assert part in wheres, wheres


def test_keras3_export_graph_raises_no_finding(reference_models):
    """model.export() has no keras_metadata.pb (not supported), but its graph is genuine."""
    data = (reference_models["k3_export"] / "saved_model.pb").read_bytes()
    assert tf_graph.scan_saved_model(tf_proto.decode_saved_model(data)) == []


def test_genuine_checkpoint_functions_are_the_only_io(reference_models):
    data = (reference_models["tk_savedmodel"] / "saved_model.pb").read_bytes()
    [graph] = tf_proto.decode_saved_model(data)
    io_ops = {(function.name.rsplit("_", 1)[0], node.op)
              for function in graph.functions for node in function.nodes
              if tf_graph.op_hazard(node.op)}
    assert io_ops == {
        ("__inference__traced_save", "SaveV2"),
        ("__inference__traced_save", "ShardedFilename"),
        ("__inference__traced_save", "MergeV2Checkpoints"),
        ("__inference__traced_restore", "RestoreV2"),
    }
    assert tf_graph.scan_saved_model([graph]) == []


# ----------------------------------------------------------------------------------------
# The traced checkpoint functions: allowed exactly where TF puts them


def traced_function(path: Path, role: str) -> str:
    data = (path / "saved_model.pb").read_bytes()
    [graph] = tf_proto.decode_saved_model(data)
    return next(f.name for f in graph.functions if f.name.startswith(f"__inference__traced_{role}_"))


def test_traced_save_called_from_elsewhere_is_refused(reference_models, tmp_path):
    source = reference_models["tk_savedmodel"]
    model = with_graph_nodes(source, tmp_path / "sm",
                             add_call_by_name(traced_function(source, "save")))
    [finding] = read_artifact(model).hazards
    assert "checkpoint function '__inference__traced_save_" in finding.detail
    assert "outside the saver" in finding.detail


def test_function_named_graph_cannot_borrow_the_saver_node_name(reference_models, tmp_path):
    """The saver's own call is allowed only from the graph's top level, not from a
    library function that copies its node name."""
    from tensorflow.core.protobuf import saved_model_pb2

    source = reference_models["tk_savedmodel"]
    model = copy_model(source, tmp_path / "sm")
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((model / "saved_model.pb").read_bytes())
    meta = saved_model.meta_graphs[0]
    saver_node = meta.saver_def.save_tensor_name.split(":")[0]
    impostor = meta.graph_def.library.function.add()
    impostor.signature.name = "graph"
    call = impostor.node_def.add(name=saver_node, op="StatefulPartitionedCall")
    call.attr["f"].func.name = traced_function(source, "save")
    (model / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    [finding] = read_artifact(model).hazards
    assert finding.path == f"saved_model.pb:graph/{saver_node}"
    assert "outside the saver" in finding.detail


def test_unsafe_opts_in_for_graph_hazards(tampered, tmp_path):
    model, _, _ = tampered["read_file"]
    out = tmp_path / "exposed.keras"
    result = cli("expose-state", model, "-o", out, "--unsafe")
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert SECRET_MARKER.encode() not in out.read_bytes()


def test_restore_from_a_constant_path_is_refused(reference_models, tmp_path, secret):
    source = reference_models["tk_savedmodel"]

    def retarget(function_def):
        path = const_string(function_def, "other/prefix", str(secret))
        restore = next(node for node in function_def.node_def if node.op == "RestoreV2")
        restore.input[0] = path

    model = with_graph_nodes(source, tmp_path / "sm", retarget,
                             function=traced_function(source, "restore"))
    [finding] = read_artifact(model).hazards
    assert finding.detail == "op 'RestoreV2' reads or writes checkpoint files"
    assert finding.path.startswith("saved_model.pb:__inference__traced_restore_")


def test_other_io_in_traced_save_is_refused(reference_models, tmp_path, secret):
    source = reference_models["tk_savedmodel"]
    model = with_graph_nodes(source, tmp_path / "sm", add_read_file(secret),
                             function=traced_function(source, "save"))
    [finding] = read_artifact(model).hazards
    assert finding.detail == "op 'ReadFile' reads files"


def test_save_suffix_with_path_traversal_is_refused(reference_models, tmp_path):
    source = reference_models["tk_savedmodel"]

    def traverse(function_def):
        for node in function_def.node_def:
            if node.op == "Const" and node.attr["value"].tensor.string_val == [b"_temp/part"]:
                node.attr["value"].tensor.string_val[0] = b"/../../../tmp/evil"

    model = with_graph_nodes(source, tmp_path / "sm", traverse,
                             function=traced_function(source, "save"))
    details = {finding.detail for finding in read_artifact(model).hazards}
    assert "op 'SaveV2' reads or writes checkpoint files" in details


# ----------------------------------------------------------------------------------------
# Directory contents, hostile encodings


def test_special_file_in_savedmodel_is_a_hazard(reference_models, tmp_path):
    model = copy_model(reference_models["tk_savedmodel"], tmp_path / "sm")
    os.mkfifo(model / "assets" / "pipe") if (model / "assets").is_dir() else os.mkfifo(
        model / "variables" / "pipe")
    [finding] = read_artifact(model).hazards
    assert finding.kind == "savedmodel_file" and "special file" in finding.detail


def test_assets_files_are_fine(reference_models, tmp_path):
    model = copy_model(reference_models["tk_savedmodel"], tmp_path / "sm")
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "vocab.txt").write_text("a\nb\n")
    assert read_artifact(model).hazards == ()


def test_symlinked_saved_model_pb_is_a_hazard(reference_models, tmp_path):
    model = copy_model(reference_models["tk_savedmodel"], tmp_path / "sm")
    real = tmp_path / "elsewhere.pb"
    (model / "saved_model.pb").rename(real)
    os.symlink(real, model / "saved_model.pb")
    [finding] = read_artifact(model).hazards
    assert finding.path == "saved_model.pb" and "symbolic link" in finding.detail


def test_text_format_graph_is_a_hazard(reference_models, tmp_path):
    model = copy_model(reference_models["tk_savedmodel"], tmp_path / "sm")
    (model / "saved_model.pb").unlink()
    (model / "saved_model.pbtxt").write_text('meta_graphs { graph_def { node { op: "ReadFile" } } }')
    [finding] = read_artifact(model).hazards
    assert finding.path == "saved_model.pbtxt"


def attr_func(name: bytes, nested: bytes = b"") -> bytes:
    """AttrValue{func: NameAttrList{name, attr{"x": nested}}}."""
    entry = length_field(1, b"x") + length_field(2, nested) if nested else b""
    return length_field(10, length_field(1, name) + (length_field(2, entry) if entry else b""))


def saved_model_with_node(node: bytes) -> bytes:
    graph = length_field(1, node)
    return varint(1 << 3) + varint(1) + length_field(2, length_field(2, graph))


def node_with_attr(attr_value: bytes, op: bytes = b"PartitionedCall") -> bytes:
    entry = length_field(1, b"f") + length_field(2, attr_value)
    return length_field(1, b"n") + length_field(2, op) + length_field(5, entry)


def test_oneof_last_member_wins_so_a_func_after_a_type_is_seen():
    # AttrValue{type: DT_FLOAT, func: {name: "ReadFile"}}: protobuf keeps the func.
    attr = varint(6 << 3) + varint(1) + attr_func(b"ReadFile")
    findings = tf_graph.scan_saved_model(
        tf_proto.decode_saved_model(saved_model_with_node(node_with_attr(attr))))
    assert [f.detail for f in findings] == ["attr calls op 'ReadFile' by name, which reads files"]


def test_nested_function_attrs_are_followed_and_bounded():
    attr = attr_func(b"Identity")
    for _ in range(5):
        attr = attr_func(b"Identity", attr)
    attr = attr_func(b"Identity", attr_func(b"WriteFile"))
    findings = tf_graph.scan_saved_model(
        tf_proto.decode_saved_model(saved_model_with_node(node_with_attr(attr))))
    assert [f.detail for f in findings] == ["attr calls op 'WriteFile' by name, which writes files"]

    deep = attr_func(b"Identity")
    for _ in range(tf_proto.MAX_ATTR_DEPTH + 5):
        deep = attr_func(b"Identity", deep)
    with pytest.raises(tf_proto.ProtobufDecodeError, match="nested deeper"):
        tf_proto.decode_saved_model(saved_model_with_node(node_with_attr(deep)))


def test_decoding_is_linear_on_hostile_input():
    """Many tiny nodes (the worst case per byte) decode at a steady rate."""
    def timed(count: int) -> float:
        graph = length_field(1, node_with_attr(attr_func(b"Identity"))) * count
        data = length_field(2, length_field(2, graph))
        best = float("inf")
        for _ in range(3):  # the best of three: shared CPUs make single timings noisy
            start = time.perf_counter()
            [meta] = tf_proto.decode_saved_model(data)
            best = min(best, time.perf_counter() - start)
        assert len(meta.nodes) == count
        return best

    small, large = timed(2_000), timed(20_000)
    assert large < 40 * max(small, 1e-3)  # 10x the input: ~10x linear, ~100x quadratic


def test_corrupt_saved_model_pb_is_unreadable(reference_models, tmp_path):
    model = copy_model(reference_models["tk_savedmodel"], tmp_path / "sm")
    data = (model / "saved_model.pb").read_bytes()
    (model / "saved_model.pb").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableModelError, match="saved_model.pb is corrupt"):
        read_artifact(model)


# ----------------------------------------------------------------------------------------
# The denylist against the installed TensorFlow's op registry

# Registered ops whose names look like I/O but only compute (reviewed for TF 2.21).
REVIEWED_COMPUTE_OPS = frozenset(
    """
    AudioSummary AudioSummaryV2 HistogramSummary ImageSummary MergeSummary ScalarSummary
    TensorSummary TensorSummaryV2 DecodeCSV ParseExampleDataset ParseExampleDatasetV2
    ExperimentalParseExampleDataset DatasetToGraph DatasetToGraphV2 RewriteDataset
    ReadVariableOp ReadVariableXlaSplitND _ReadVariablesOp TensorArrayRead TensorArrayReadV2
    TensorArrayReadV3 TensorArrayWrite TensorArrayWriteV2 TensorArrayWriteV3 DecodeProtoV2
    EncodeProto Snapshot SerializeIterator DeserializeIterator IteratorToStringHandle
    MultiDeviceIteratorToStringHandle HostConst _HostCast CopyHost _CopyFromGpuToHost
    _CopyFromHostToGpu GraphDefVersion SdcaFprint Fingerprint StatsAggregatorSummary
    ExperimentalStatsAggregatorSummary BoostedTreesFlushQuantileSummaries
    BoostedTreesMakeQuantileSummaries BoostedTreesMakeStatsSummary
    BoostedTreesQuantileStreamResourceAddSummaries IteratorGetModelProto
    AnonymousMemoryCache DeleteMemoryCache
    DummyMemoryCache BoostedTreesExampleDebugOutputs RequiresOlderGraphVersion
    """.split()
)
_IO_LOOKING = (r"File|Reader|Record|Save|Restore|Checkpoint|Summar|Writer|Print|Debug|Dump|"
               r"PyFunc|Rpc|Send|Recv|[Ff]eed|TPU|Collective|Nccl|Session|Remote|Host|Snapshot|"
               r"Sql|LMDB|CSV|Vocab|Immutable|Abort|Event|Proto|Load|StringHandle|Graph|"
               r"DataService|RegisterDataset|Cache")


def test_denylist_covers_io_looking_ops_of_installed_tensorflow():
    import re

    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    ops = op_def_pb2.OpList()
    ops.ParseFromString(c_api.TF_GetBuffer(c_api.TF_GetAllOpList()))
    names = {op.name for op in ops.op}
    assert {"ReadFile", "SaveV2", "PyFunc", "TFRecordDatasetV2"} <= names
    unreviewed = sorted(
        name for name in names
        if re.search(_IO_LOOKING, name) and tf_graph.op_hazard(name) is None
        and name not in REVIEWED_COMPUTE_OPS
    )
    assert unreviewed == [], "review these ops and deny or list them: " + " ".join(unreviewed)
    # Every explicit entry is a real op (no typos hiding a gap).
    assert sorted(set(tf_graph.DENIED_OPS) - names) == []
