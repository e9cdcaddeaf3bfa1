"""Config-level attacks on the static scan: values that name files or URLs, tf_keras op
layers calling non-math TensorFlow symbols, functions and classes from Keras internals or
with no module. Each attack is a real small model whose config was tampered, run through
the real CLI; plain tf_keras / Keras on the same file shows what the scan prevents."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from surgery.io.formats import read_artifact
from surgery.io.safety import scan_config

try:
    from tests import malicious
except ImportError:  # tests/ is not a package: pytest put it on sys.path itself
    import malicious

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "cli.py"
SECRET_MARKER = "SECRET_MARKER_7f3a"


@pytest.fixture(scope="session")
def genuine(tmp_path_factory):
    return malicious.save_genuine_config_models(tmp_path_factory.mktemp("genuine_config"))


@pytest.fixture(scope="session")
def bait(tmp_path_factory):
    """A secret file a config may point at, and where a canary directory would appear."""
    folder = tmp_path_factory.mktemp("bait")
    secret = folder / "secret_vocabulary.txt"
    secret.write_text(f"{SECRET_MARKER}\nother\n")
    return {"secret": secret, "canary_dir": folder / "canary_dir"}


# ----------------------------------------------------------------------------------------
# The tampering, one function per attack: (source model, edit(config, bait), expected
# kind, text the one-line refusal must contain)


def _layer(config, name):
    return next(layer for layer in config["config"]["layers"]
                if layer["config"]["name"] == name or layer["config"]["name"].startswith(name + "_"))


def _vocabulary_file(config, bait):
    _layer(config, "lookup")["config"]["vocabulary"] = str(bait["secret"])


def _vocabulary_url(config, bait):
    _layer(config, "lookup")["config"]["vocabulary"] = "http://127.0.0.1:9/vocabulary.txt"


def _url_in_other_value(config, bait):
    _layer(config, "lookup")["config"]["oov_token"] = "file:///etc/passwd"


def _op_write_graph(config, bait):
    layer = _layer(config, "tf.math.add")
    layer["config"]["function"] = "io.write_graph"
    layer["inbound_nodes"] = [["x", 0, 0, {"logdir": str(bait["canary_dir"]), "name": "g.pbtxt"}]]


def _op_global_state(config, bait):
    # Not caught by the old denylist: a TensorFlow symbol that changes process state.
    _layer(config, "tf.math.add")["config"]["function"] = (
        "config.threading.set_inter_op_parallelism_threads")


def _slicing_op_write_file(config, bait):
    _layer(config, "tf.__operators__.getitem")["config"]["function"] = "io.write_file"


def _class_method_write_graph(config, bait):
    layer = _layer(config, "tf.RaggedTensor.from_row_lengths")
    layer["config"]["cls_symbol"] = "io.write_graph"
    layer["config"]["method_name"] = "__call__"
    layer["inbound_nodes"] = [[["v", 0, 0, {"kwargs": {
        "logdir": str(bait["canary_dir"]), "name": "g.pbtxt"}}]]]


def _instance_method_dunder(config, bait):
    _layer(config, "input.to_tensor")["config"]["attr_name"] = "__reduce_ex__"


def _internal_function_module(config, bait):
    _layer(config, "dense")["config"]["activation"] = {
        "module": "keras.src.utils.file_utils", "class_name": "function", "config": "rmtree",
        "registered_name": "rmtree"}


def _internal_class_module(config, bait):
    _layer(config, "dense")["module"] = "keras.src.saving.saving_lib"


def _class_without_module(config, bait):
    layer = _layer(config, "dense")
    del layer["module"]
    layer["class_name"] = "EvilDense"


def _keras2_unknown_class(config, bait):
    _layer(config, "dense")["class_name"] = "EvilDense"


def _keras_package_registration(config, bait):
    _layer(config, "dense")["registered_name"] = "keras>EvilDense"


def _feature_column_vocabulary_file(config, bait):
    _layer(config, "dense")["config"]["kernel_initializer"]["config"]["vocabulary_file"] = str(
        bait["secret"])


CASES = {
    "tk_vocabulary_file": ("tk_lookup.h5", _vocabulary_file, "file_reference", "secret_vocabulary.txt"),
    "k3_vocabulary_file": ("k3_lookup.keras", _vocabulary_file, "file_reference", "secret_vocabulary.txt"),
    "tk_vocabulary_url": ("tk_lookup.h5", _vocabulary_url, "file_reference", "http://127.0.0.1:9"),
    "k3_url_in_plain_value": ("k3_lookup.keras", _url_in_other_value, "file_reference", "file:///etc/passwd"),
    "tk_op_write_graph": ("tk_ops.h5", _op_write_graph, "unsafe_api", "tf.io.write_graph"),
    "tk_op_global_state": ("tk_ops.h5", _op_global_state, "unsafe_api", "set_inter_op_parallelism_threads"),
    "tk_slicing_op_write_file": ("tk_ops.h5", _slicing_op_write_file, "unsafe_api", "tf.io.write_file"),
    "tk_class_method_write_graph": ("tk_ragged.h5", _class_method_write_graph, "unsafe_api", "'io.write_graph'"),
    "tk_instance_method_dunder": ("tk_ragged.h5", _instance_method_dunder, "unsafe_api", "'__reduce_ex__'"),
    "k3_internal_function_module": ("k3_dense.keras", _internal_function_module, "foreign_module", "keras.src.utils.file_utils"),
    "k3_internal_class_module": ("k3_dense.keras", _internal_class_module, "foreign_module", "keras.src.saving.saving_lib"),
    "k3_class_without_module": ("k3_dense.keras", _class_without_module, "custom_object", "'EvilDense'"),
    "tk_unknown_class_name": ("tk_ops.h5", _keras2_unknown_class, "custom_object", "'EvilDense'"),
    "k3_keras_package_registration": ("k3_dense.keras", _keras_package_registration, "custom_object", "keras>EvilDense"),
    "k3_file_key_anywhere": ("k3_dense.keras", _feature_column_vocabulary_file, "file_reference", "'vocabulary_file'"),
}


@pytest.fixture(scope="session")
def attack_files(genuine, bait, tmp_path_factory):
    folder = tmp_path_factory.mktemp("config_attacks")
    files = {}
    for name, (source, edit, _, _) in CASES.items():
        source_path = genuine[source]
        target = folder / f"{name}{source_path.suffix}"
        tamper = (malicious.tamper_h5_config if source_path.suffix == ".h5"
                  else malicious.tamper_keras_config)
        files[name] = tamper(source_path, target, lambda config, edit=edit: edit(config, bait))
    return files


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(args: list, cwd: Path) -> subprocess.CompletedProcess:
    # -X importtime lists every module imported: a refusal must come before TensorFlow.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-X", "importtime", str(CLI), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)


# ----------------------------------------------------------------------------------------
# The CLI refuses before Keras or TensorFlow is even imported


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_refuses_config_attack(attack_files, bait, tmp_path, name):
    _, _, kind, expect = CASES[name]
    path = attack_files[name]
    before = _sha256(path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    output = cwd / ("out" + path.suffix)

    result = run_cli(["expose-state", path, "-o", output], cwd)

    imports = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 3, result.stderr[-2000:]
    assert len(lines) == 1, lines
    assert f"{kind} at " in lines[0] and expect in lines[0], lines[0]
    assert "--unsafe" in lines[0]
    assert SECRET_MARKER not in result.stdout + result.stderr
    # Neither TensorFlow nor any Keras was imported: nothing could read the vocabulary
    # file or run an op before the refusal.
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in imports}
    assert imported and not imported & {"tensorflow", "keras", "tf_keras"}, imported
    assert not output.exists()
    assert list(cwd.iterdir()) == []
    assert _sha256(path) == before
    assert not bait["canary_dir"].exists()


def test_scan_names_the_offending_place(attack_files):
    for name, (_, _, kind, expect) in CASES.items():
        findings = scan_config(read_artifact(attack_files[name]).model_config)
        assert findings and findings[0].kind == kind, (name, findings)
        assert expect in findings[0].detail or expect in findings[0].path, (name, findings[0])


# ----------------------------------------------------------------------------------------
# What plain tf_keras / Keras do with the same files


def test_plain_tf_keras_reads_the_vocabulary_file(attack_files):
    result = run_python(
        "import tf_keras\n"
        f"m = tf_keras.models.load_model({str(attack_files['tk_vocabulary_file'])!r}, compile=False)\n"
        "print('VOCABULARY', list(map(str, m.get_layer('lookup').get_vocabulary())))\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"VOCABULARY ['[UNK]', '{SECRET_MARKER}', 'other']" in result.stdout


def test_plain_keras3_reads_the_vocabulary_file_outside_safe_mode(attack_files):
    # Keras 3.15 refuses a vocabulary path itself in safe mode; with safe_mode=False (or in
    # older Keras 3) the layer reads the file while the model is rebuilt.
    path = str(attack_files["k3_vocabulary_file"])
    result = run_python(
        "import keras\n"
        "try:\n"
        f"    keras.saving.load_model({path!r})\n"
        "except Exception as error:\n"
        "    print('SAFE MODE REFUSED', 'vocabulary file outside' in str(error))\n"
        "from keras.src.layers.preprocessing.index_lookup import IndexLookup\n"
        "seen = []\n"
        "original = IndexLookup._lookup_table_from_file\n"
        "def spy(self, filename):\n"
        "    table = original(self, filename)\n"
        "    seen.append(open(filename).read())\n"
        "    return table\n"
        "IndexLookup._lookup_table_from_file = spy\n"
        "try:\n"
        f"    keras.saving.load_model({path!r}, safe_mode=False)\n"
        "except Exception as error:\n"
        "    print('LOAD ERROR', type(error).__name__)\n"
        "print('READ', seen)\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SAFE MODE REFUSED True" in result.stdout
    assert SECRET_MARKER in result.stdout.split("READ", 1)[1]


def test_plain_tf_keras_class_method_creates_the_directory(attack_files, tmp_path):
    # Same file as the CLI case, with its own canary directory.
    canary = tmp_path / "plain_canary_dir"
    path = malicious.tamper_h5_config(
        attack_files["tk_class_method_write_graph"], tmp_path / "copy.h5",
        lambda config: _class_method_write_graph(config, {"canary_dir": canary}))
    result = run_python(
        "import tf_keras\n"
        "try:\n"
        f"    tf_keras.models.load_model({str(path)!r}, compile=False)\n"
        "except Exception as error:\n"
        "    print('LOAD ERROR', type(error).__name__)\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert canary.is_dir()  # tf.io.write_graph ran during load, then failed on a tensor


def test_plain_tf_keras_op_lambda_write_graph_is_stopped_by_the_dropped_name(attack_files, tmp_path):
    # TFOpLambda drops a `name` keyword before calling its function, so tf.io.write_graph
    # (whose `name` is required) fails before it creates logdir: no directory here. The
    # ClassMethod case above passes its kwargs untouched and does create it.
    canary = tmp_path / "plain_canary_dir"
    path = malicious.tamper_h5_config(
        attack_files["tk_op_write_graph"], tmp_path / "copy.h5",
        lambda config: _op_write_graph(config, {"canary_dir": canary}))
    result = run_python(
        "import tf_keras\n"
        "try:\n"
        f"    tf_keras.models.load_model({str(path)!r}, compile=False)\n"
        "except Exception as error:\n"
        "    print('LOAD ERROR', type(error).__name__, 'name' in str(error))\n")
    assert "LOAD ERROR TypeError True" in result.stdout, result.stdout + result.stderr[-2000:]
    assert not canary.exists()


# ----------------------------------------------------------------------------------------
# No false alarms on genuine models


def test_genuine_models_behind_the_attacks_scan_clean(genuine):
    for path in genuine.values():
        assert scan_config(read_artifact(path).model_config) == [], path


def test_every_fixture_scans_clean():
    deliberate = {"lambda_unsafe.keras": "lambda", "subclassed.keras": "custom_object"}
    fixtures = ROOT / "fixtures" / "models"
    paths = sorted(
        glob.glob(str(fixtures / "*.keras")) + glob.glob(str(fixtures / "*.h5"))
        + glob.glob(str(fixtures / "keras2" / "*.h5")) + glob.glob(str(fixtures / "keras2" / "*.keras"))
        + [str(fixtures / "keras2" / "k2_savedmodel")])
    assert len(paths) > 30
    for path in paths:
        artifact = read_artifact(path)
        if artifact.model_config is None:
            continue
        findings = scan_config(artifact.model_config)
        for _, embedded in artifact.embedded_configs:
            findings += scan_config(embedded)
        expected = deliberate.get(Path(path).name)
        if expected:
            assert findings and findings[0].kind == expected, (path, findings)
        else:
            assert findings == [], (path, findings)


_SKIP = {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}


def _serialize_every_class(root, namespaces, serialize) -> int:
    import inspect

    count = 0
    for namespace in namespaces:
        module = root
        for part in namespace.split("."):
            module = getattr(module, part)
        for name in dir(module):
            value = getattr(module, name)
            if name.startswith("_") or name in _SKIP or not inspect.isclass(value):
                continue
            for args in ((), (2,), (2, 2), (3, 3, 3)):
                try:
                    config = serialize(value(*args))
                    break
                except Exception:
                    continue
            else:
                continue
            config = json.loads(json.dumps(config, default=str))
            assert scan_config(config) == [], (namespace, name, scan_config(config)[:2])
            count += 1
    return count


def test_zoo_of_keras3_objects_scans_clean():
    import keras

    namespaces = ["layers", "initializers", "regularizers", "constraints", "losses", "metrics",
                  "optimizers", "optimizers.schedules", "dtype_policies", "quantizers"]
    assert _serialize_every_class(keras, namespaces, keras.saving.serialize_keras_object) > 250


def test_zoo_of_tf_keras_objects_scans_clean():
    import tf_keras

    namespaces = ["layers", "layers.experimental.preprocessing", "initializers", "regularizers",
                  "constraints", "losses", "metrics", "optimizers", "optimizers.legacy",
                  "optimizers.schedules", "mixed_precision"]
    assert _serialize_every_class(tf_keras, namespaces, tf_keras.saving.serialize_keras_object) > 250
    # The Keras 2 form (h5 / SavedModel): class_name only.
    assert _serialize_every_class(
        tf_keras, ["layers"], tf_keras.utils.legacy.serialize_keras_object) > 100


def test_genuine_model_zoo_scans_clean(tmp_path):
    import keras
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    configs = {}
    # Keras 3 functional with keras.ops on KerasTensors (stored as keras.src.ops classes).
    inputs = keras.Input((5, 3))
    x = keras.ops.where(keras.ops.not_equal(inputs, 0.0), inputs, keras.ops.ones_like(inputs))
    x = keras.layers.LSTM(2)(keras.ops.concatenate([x, keras.ops.square(x)], axis=-1))
    model = keras.Model(inputs, keras.activations.softmax(x))
    model.compile(optimizer=keras.optimizers.SGD(), loss=keras.losses.categorical_crossentropy,
                  metrics=[keras.metrics.top_k_categorical_accuracy])
    model.save(tmp_path / "k3_ops.keras")
    configs["k3_ops"] = read_artifact(tmp_path / "k3_ops.keras").model_config
    # tf_keras op layers, ragged class and instance methods, in both serializations.
    x2 = tf_keras.Input((4, 3))
    y = tf.nn.relu(tf.math.add(x2, 1.0))
    y = tf.reshape(tf.transpose(y, [0, 2, 1]), (-1, 12))[:, -1]
    y = tf.compat.v1.expand_dims(tf.einsum("b,b->b", y, y), -1)
    tk_model = tf_keras.Model(x2, tf_keras.layers.Dense(1)(y))
    configs["tk_ops_json"] = json.loads(tk_model.to_json())
    tk_model.save(tmp_path / "tk_ops.keras")
    configs["tk_ops_keras"] = read_artifact(tmp_path / "tk_ops.keras").model_config
    values = tf_keras.Input((), batch_size=6)
    lengths = tf_keras.Input((), dtype="int64", batch_size=3)
    ragged = tf.RaggedTensor.from_row_lengths(values, lengths)
    ragged_model = tf_keras.Model([values, lengths], [ragged.to_tensor(), ragged.row_lengths()])
    configs["tk_ragged"] = json.loads(ragged_model.to_json())
    # Lookups and feature columns with vocabularies given as lists.
    text = tf_keras.Input((1,), dtype="string")
    configs["tk_lookup"] = json.loads(tf_keras.Model(text, tf_keras.layers.StringLookup(
        vocabulary=["a", "b"])(text)).to_json())
    text3 = keras.Input((1,), dtype="string")
    lookup3 = keras.layers.TextVectorization(vocabulary=["a", "b"])
    configs["k3_text"] = keras.saving.serialize_keras_object(keras.Model(text3, lookup3(text3)))
    column = tf.feature_column.categorical_column_with_vocabulary_list("w", ["a", "b"])
    features = tf_keras.layers.DenseFeatures([tf.feature_column.indicator_column(column)])
    configs["tk_feature_columns"] = tf_keras.utils.legacy.serialize_keras_object(features)
    # tfmot wrappers.
    base = tf_keras.Sequential([tf_keras.Input((5, 3)), tf_keras.layers.LSTM(4),
                                tf_keras.layers.Dense(2)])
    configs["pruned"] = json.loads(tfmot.sparsity.keras.prune_low_magnitude(
        base, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(0.1, 0.5, 0, 10)).to_json())
    dense = tf_keras.Sequential([tf_keras.Input((5,)), tf_keras.layers.Dense(4),
                                 tf_keras.layers.Dense(2)])
    configs["clustered"] = json.loads(tfmot.clustering.keras.cluster_weights(
        dense, number_of_clusters=3,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.LINEAR).to_json())
    configs["quantized"] = json.loads(tfmot.quantization.keras.quantize_model(
        tf_keras.Sequential([tf_keras.Input((5,)), tf_keras.layers.Dense(4),
                             tf_keras.layers.ReLU()])).to_json())

    op_layers = {layer["class_name"] for key in ("tk_ops_json", "tk_ragged")
                 for layer in configs[key]["config"]["layers"]}
    assert {"TFOpLambda", "SlicingOpLambda", "ClassMethod", "InstanceMethod"} <= op_layers
    for name, config in configs.items():
        config = json.loads(json.dumps(config, default=str))
        assert scan_config(config) == [], (name, scan_config(config)[:3])


# ----------------------------------------------------------------------------------------
# Scanner details


def test_scan_imports_no_tensorflow():
    result = run_python(
        "import sys\nimport surgery.io.safety, surgery.io.tf_pure_ops, surgery.io.keras_names\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_pure_op_allowlist_keeps_side_effects_out():
    from surgery.io.tf_pure_ops import TENSOR_ATTRIBUTES, TF_PURE_OPS

    for name in ("math.add", "nn.relu", "__operators__.getitem", "compat.v1.transpose",
                 "reshape", "concat", "einsum", "gather", "where", "shape", "tile", "cast"):
        assert name in TF_PURE_OPS, name
    for name in ("io.write_graph", "io.write_file", "io.read_file", "print", "py_function",
                 "numpy_function", "compat.v1.py_func", "random.set_seed", "load_library",
                 "summary.scalar", "saved_model.save", "debugging.enable_check_numerics",
                 "data.Dataset", "Variable", "cond", "while_loop", "map_fn", "compat.v1.Print",
                 "random.fixed_unigram_candidate_sampler", "image.decode_png", "config.run_functions_eagerly"):
        assert name not in TF_PURE_OPS, name
    for name in ("__class__", "__init__", "__globals__", "__reduce__", "__reduce_ex__",
                 "__getattribute__", "__dict__", "numpy", "_numpy"):
        assert name not in TENSOR_ATTRIBUTES, name


def test_path_keys_and_urls():
    def lookup(**config):
        return {"class_name": "StringLookup", "config": {"name": "l", **config}}

    assert scan_config(lookup(vocabulary=["a", "/etc/passwd"])) == []
    assert scan_config(lookup(vocabulary=None)) == []
    assert [f.kind for f in scan_config(lookup(vocabulary="/etc/passwd"))] == ["file_reference"]
    assert [f.kind for f in scan_config(lookup(vocab_path="x.txt"))] == ["file_reference"]
    assert [f.kind for f in scan_config(lookup(oov_token="gs://b/x"))] == ["file_reference"]
    assert [f.kind for f in scan_config(lookup(mask_token="FILE:/etc/passwd"))] == ["file_reference"]
    assert scan_config(lookup(oov_token="[UNK]", name="a:b")) == []


def test_function_references_need_a_genuine_keras_function():
    def dense(activation):
        return {"class_name": "Dense", "config": {"name": "d", "activation": activation}}

    def function(module, name):
        return {"module": module, "class_name": "function", "config": name, "registered_name": name}

    assert scan_config(dense(function("builtins", "relu"))) == []
    assert scan_config(dense(function("keras.activations", "gelu"))) == []
    assert scan_config(dense(function("keras.activations", "deserialize")))[0].kind == "foreign_module"
    assert scan_config(dense(function("keras.losses", "rmtree")))[0].kind == "foreign_module"
    # Keras 3 looks a "builtins" function up among its own and the user's; tf_keras also in
    # Python's builtins module, so a name found there is foreign, any other a custom object.
    assert scan_config(dense(function("builtins", "rmtree")))[0].kind == "custom_object"
    assert scan_config(dense(function("builtins", "exec")))[0].kind == "unsafe_api"
    assert scan_config(dense(function("builtins", "open")))[0].kind == "foreign_module"
    assert scan_config(dense(function("builtins", "getattr")))[0].kind == "foreign_module"
    assert scan_config(dense(function("tf_keras.src.utils", "relu")))[0].kind == "foreign_module"
    mismatched = {**function("keras.activations", "relu"), "registered_name": "serialize"}
    assert scan_config(dense(mismatched))[0].kind == "foreign_module"


def test_typespec_and_markers():
    spec = {"class_name": "__typespec__", "spec_name": "TensorSpec",
            "module": "tensorflow.python.framework.tensor", "config": [[None, 3], "float32"],
            "registered_name": None}
    assert scan_config(spec) == []
    assert scan_config({**spec, "module": "tensorflow.python.lib.io.file_io"})[0].kind == "foreign_module"
    assert scan_config({**spec, "spec_name": "GFile"})[0].kind == "foreign_module"
    assert scan_config({"class_name": "__keras_tensor__", "config": {"keras_history": ["a", 0, 0]}}) == []


def test_custom_objects_of_the_training_configuration_are_listed_not_refused():
    """Keras 3 saves a loss of the file's own as a "builtins" function by name: nothing here
    compiles a model, and no Keras imports anything to find it. Anything importable, any
    other hazard, and the same reference anywhere else stay refused."""
    from surgery.errors import UnsafeContentError
    from surgery.io.safety import ensure_safe, training_only

    def model(compile_config, activation="relu"):
        return {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"name": "m", "layers": [
            {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "activation": activation}}]},
            "compile_config": compile_config}

    own_loss = {"module": "builtins", "class_name": "function", "config": "my_loss", "registered_name": "function"}
    registered = {"module": None, "class_name": "MyLoss", "config": {}, "registered_name": "pkg>MyLoss"}
    config = model({"loss": own_loss, "metrics": [registered], "optimizer": "adam"})
    findings = scan_config(config)
    assert [(f.path, f.kind, training_only(f)) for f in findings] == [
        ("compile_config.loss", "custom_object", True), ("compile_config.metrics[0]", "custom_object", True)]
    ensure_safe(config)  # not refused
    for refused in (model({"loss": {**own_loss, "config": "exec"}}),            # tf_keras finds Python's exec
                    model({"loss": {"module": "mypkg.losses", "class_name": "MyLoss", "config": {}}}),  # imported
                    model({"loss": {"class_name": "Lambda", "config": {"function": "x"}}}),
                    model({}, activation=own_loss)):                              # a layer computes with it
        with pytest.raises(UnsafeContentError):
            ensure_safe(refused)
