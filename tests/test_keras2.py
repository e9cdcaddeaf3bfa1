"""Keras 2 family models (tf_keras .h5/.keras/SavedModel, CuDNN layouts, tfmot wrappers):
found statically, operated on in their own family or translated to Keras 3, verified."""

import hashlib
import json

import numpy as np
import pytest

from conftest import FIXTURES
from surgery.ops.convert import convert_file
from surgery.ops.expose import expose_state_file
from surgery.io.formats import read_artifact
from surgery.ops.inspect import inspect
from surgery.io.loading import load_model
from surgery.check.verify import effective_weights, random_inputs

KERAS2 = FIXTURES / "keras2"
CATALOG = {m["file"]: m for m in json.loads((KERAS2 / "catalog.json").read_text())["models"]}
MODELS = [name for name, entry in CATALOG.items()
          if ".reference." not in name and not name.startswith("k2_cudnn")]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_inspect_finds_every_layer_and_wrapper(name):
    report = inspect(KERAS2 / name)
    assert report["family"] == "keras2"
    expected = sorted((layer["name"], layer.get("wrapper")) for layer in CATALOG[name]["recurrent_layers"])
    found = sorted((site["layer"] if not site["wrapper"] else _inner_name(site, name), site["wrapper"])
                   for site in report["sites"])
    assert found == expected
    if report["format"] != "savedmodel":  # a SavedModel's metadata records no layer input shapes
        assert all(site["weights"] for site in report["sites"]), "weight shapes are reported"


def _inner_name(site, name):
    # A wrapper's site is named after the wrapper layer; the catalog names the wrapped layer.
    return CATALOG[name]["recurrent_layers"][0]["name"]


def test_cudnn_bias_is_reported_in_its_stored_layout():
    site = inspect(KERAS2 / "k2_cudnn_lstm.h5")["sites"][0]
    assert site["class"] == "CuDNNLSTM" and site["weights"]["bias"] == [64]


@pytest.mark.parametrize("name", MODELS)
def test_expose_state_stays_in_the_keras2_family(name, tmp_path):
    source = KERAS2 / name
    before = digest(source) if source.is_file() else None
    out = tmp_path / (name if source.is_file() else "out_savedmodel")
    result = expose_state_file(source, out, inputs=True)
    assert result.report.ok, result.report.summary()
    assert max(result.report.output_diffs) == 0.0
    assert read_artifact(out).family == "keras2"
    if before is not None:
        assert digest(source) == before


def test_h5_fast_path_keeps_every_weight_byte(tmp_path):
    import h5py

    out = tmp_path / "f.h5"
    result = expose_state_file(KERAS2 / "k2_functional.h5", out)
    assert result.fast_path

    def datasets(path):
        values = {}
        with h5py.File(path) as handle:
            handle["model_weights"].visititems(
                lambda key, obj: values.__setitem__(key, obj[()].tobytes()) if hasattr(obj, "shape") else None)
        return values

    assert datasets(out) == datasets(KERAS2 / "k2_functional.h5")


@pytest.mark.parametrize("name", ["k2_functional.h5", "k2_savedmodel", "k2_nested.h5", "k2_bidirectional.h5"])
def test_to_keras3_translates_then_exposes(name, tmp_path):
    result = expose_state_file(KERAS2 / name, tmp_path / "out.keras", to="keras3", inputs=True)
    assert result.report.ok, result.report.summary()
    assert read_artifact(tmp_path / "out.keras").family == "keras3"
    # The translation itself is checked against the Keras 2 file, not only the result against it.
    translation = result.report.facts["translation"]
    assert translation["ok"] and translation["checks"] and "Keras 2 original" in result.report.summary()
    manifest = json.loads((tmp_path / "out.keras.manifest.json").read_text())
    assert manifest["verification"]["translation"]["ok"]


def test_to_keras3_refuses_a_translation_that_differs_from_the_keras2_file(tmp_path, monkeypatch):
    from surgery.errors import VerificationError
    from surgery.ops import translate

    real = translate.translate

    def off(*args, **kwargs):
        model, notes = real(*args, **kwargs)
        layer = next(layer for layer in model.layers if layer.weights)
        layer.set_weights([w * 1.01 for w in layer.get_weights()])
        return model, notes

    monkeypatch.setattr(translate, "translate", off)
    with pytest.raises(VerificationError, match="Keras 2 original"):
        expose_state_file(KERAS2 / "k2_functional.h5", tmp_path / "out.keras", to="keras3")
    assert not (tmp_path / "out.keras").exists()


def test_convert_is_identical_to_the_keras2_original(tmp_path, keras):
    result = convert_file(KERAS2 / "k2_functional.h5", tmp_path / "c.keras")
    assert result.max_abs_diff == 0.0
    assert any("time_major" in note for note in result.notes)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["family"] == "keras3" and manifest["operation"] == "convert"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cudnn_weights_convert_to_the_reference_model(kind, tmp_path, keras):
    result = convert_file(KERAS2 / f"k2_cudnn_{kind}.h5", tmp_path / "c.keras")
    assert any("cuDNN" in note for note in result.notes)
    converted = keras.saving.load_model(result.output)
    reference = load_model(KERAS2 / f"k2_cudnn_{kind}.reference.h5")
    x = random_inputs(reference, batch=3)[0]
    np.testing.assert_allclose(np.asarray(converted(x)), reference(x).numpy(), atol=1e-6, rtol=0)


def _lstm(model):
    return next(layer for layer in model.layers if layer.weights and "lstm" in layer.name)


def test_pruned_model_keeps_wrappers_and_sparsity(tmp_path):
    out = tmp_path / "p.h5"
    expose_state_file(KERAS2 / "k2_pruned.h5", out, inputs=True)
    report = inspect(out)
    assert report["sites"][0]["wrapper"] == "PruneLowMagnitude"
    model = load_model(out)
    model(random_inputs(model)[: len(model.inputs)])
    kernel = effective_weights(_lstm(model))[0]
    assert int(np.sum(kernel == 0)) == CATALOG["k2_pruned.h5"]["kernel_zeros"]


def test_strip_removes_wrappers_and_keeps_sparsity_and_clusters(tmp_path):
    pruned = expose_state_file(KERAS2 / "k2_pruned.h5", tmp_path / "p.h5", strip=True)
    assert pruned.report.ok and inspect(tmp_path / "p.h5")["sites"][0]["wrapper"] is None
    kernel = _lstm(load_model(tmp_path / "p.h5")).get_weights()[0]
    assert int(np.sum(kernel == 0)) == CATALOG["k2_pruned.h5"]["kernel_zeros"]
    clustered = expose_state_file(KERAS2 / "k2_clustered.h5", tmp_path / "c.keras", strip=True, to="keras3")
    assert clustered.report.ok
    kernel = _lstm(load_model(tmp_path / "c.keras")).get_weights()[0]
    assert len(np.unique(kernel)) == CATALOG["k2_clustered.h5"]["kernel_unique_values_clustered"]


def test_convert_reports_one_check_and_fails_when_the_written_file_is_not_the_translation(tmp_path):
    """convert's verification is the one report type: the written file's outputs are claimed
    bit-exact against the translation, the translation is judged against the Keras 2 original."""
    from surgery.ops.convert import verify_written
    from surgery.ops.translate import translate

    source = KERAS2 / "k2_functional.h5"
    result = convert_file(source, tmp_path / "c.keras")
    report = result.report
    assert report.ok and report.exact and set(report.exact.values()) == {0.0}
    assert report.checks and all(name.startswith("original output") for name in report.checks)
    assert result.max_abs_diff == max(c.max_abs_diff for c in report.checks.values())
    manifest = json.loads(result.manifest.read_text())
    assert manifest["verification"]["ok"] and manifest["verification"]["exact"] == report.exact

    # An in-memory translation that is not what the file holds: the exact claim fails.
    model, _notes = translate(read_artifact(source))
    layer = next(layer for layer in model.layers if layer.weights)
    layer.set_weights([w + 0.01 for w in layer.get_weights()])
    broken = verify_written(read_artifact(source), result.output, model, unsafe=False, custom_objects=None)
    assert not broken.ok and max(broken.exact.values()) > 0
    assert broken.summary().startswith("VERIFICATION FAILED") and "written output" in broken.summary()


@pytest.mark.parametrize("fixture,wrapper", [("k2_clustered.h5", "ClusterWeightsRNN"),
                                             ("k2_pruned.h5", "PruneLowMagnitude")])
def test_model_optimization_wrappers_are_refused_by_keras3_with_the_way_out(tmp_path, fixture, wrapper):
    """tfmot exists for tf_keras only: translating its wrappers was an internal error (exit 5,
    "Unknown layer"); now a one-line refusal naming --strip, which does translate."""
    from surgery.errors import NotSupportedError

    source = FIXTURES / "keras2" / fixture
    with pytest.raises(NotSupportedError, match=f"{wrapper} .* exist only in tf_keras.*--strip -o PLAIN.h5"):
        convert_file(source, tmp_path / "converted.keras")
    with pytest.raises(NotSupportedError, match="to use --to keras3, add --strip"):
        expose_state_file(source, tmp_path / "exposed.keras", to="keras3")
    assert list(tmp_path.iterdir()) == []
    assert expose_state_file(source, tmp_path / "exposed.keras", to="keras3", strip=True).report.ok
