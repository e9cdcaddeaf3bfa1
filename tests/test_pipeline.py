"""The one write pipeline (surgery.ops.pipeline): outputs checked before any work, nothing left
at the targets (nor temporaries, nor directories it made) after a failure, manifests placed
before their artifacts, several outputs in one commit. Real fixture files; the operation's
parts here are plain file copies, so no TensorFlow is needed."""

import json
import os
import shutil

import pytest

from conftest import FIXTURES
from surgery.errors import SurgeryError, UnsafeContentError, UsageError, VerificationError
from surgery.io import formats, saving, writers
from surgery.ops.pipeline import ModelManifest, Target, WriteJob, in_background

MODEL = FIXTURES / "lstm_sequential.keras"
OTHER = FIXTURES / "gru.keras"


class Report:
    def __init__(self, ok: bool):
        self.ok = ok

    def as_dict(self):
        return {"ok": self.ok, "checked": "copy"}

    def summary(self):
        return "verified" if self.ok else "VERIFICATION FAILED: the copy differs"


def leftovers(root):
    """Everything under root: what a failed run must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def copy_into(source, target):
    return lambda temps: shutil.copyfile(source, temps[target])


def model_manifest(*targets):
    return lambda: {target: ModelManifest("keras", "keras3", extra={"note": "copied"}) for target in targets}


def test_a_written_output_carries_its_manifest(tmp_path):
    out = tmp_path / "copy.keras"
    steps = []
    with WriteJob("copy", progress=steps.append) as job:
        artifact = job.open(MODEL, needs="copy")
        job.check(Target(out))
        done = job.write(copy_into(MODEL, out), verify=lambda temps: Report(formats.read_artifact(temps[out])
                                                                            .model_config is not None),
                         manifests=model_manifest(out))
    assert done.outputs == (out,) and done.report.ok and steps == ["verifying"]
    assert out.read_bytes() == MODEL.read_bytes()
    manifest = json.loads(done.manifests[out].read_text())
    assert done.manifests[out] == saving.manifest_path(out)
    assert manifest["operation"] == "copy" and manifest["artifact"] == "copy.keras"
    assert manifest["source"] == {"path": str(artifact.path), "sha256": writers.sha256_of(MODEL)}
    assert manifest["note"] == "copied" and manifest["verification"] == {"ok": True, "checked": "copy"}
    assert list(manifest)[-1] == "verification"
    assert leftovers(tmp_path) == ["copy.keras", "copy.keras.manifest.json"]


def test_outputs_are_checked_before_the_write_callback_runs(tmp_path):
    source = tmp_path / "model.keras"
    shutil.copyfile(MODEL, source)
    calls = []
    with WriteJob("copy") as job:
        job.open(source)
        with pytest.raises(UsageError, match="onto the input"):
            job.check(Target(source))
        with pytest.raises(SurgeryError, match="checked"):
            job.write(calls.append, manifests=dict)
    assert calls == [] and source.read_bytes() == MODEL.read_bytes()
    assert leftovers(tmp_path) == ["model.keras"]

    existing = tmp_path / "taken.keras"
    existing.write_bytes(b"someone else's")
    with pytest.raises(UsageError, match="--force"), WriteJob("copy") as job:
        job.open(source)
        job.check(Target(tmp_path / "new.keras"), Target(existing))
        job.write(calls.append, manifests=dict)
    assert calls == [] and existing.read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == ["model.keras", "taken.keras"]


def test_an_input_added_after_the_check_is_refused(tmp_path):
    with WriteJob("copy") as job:
        job.open(MODEL)
        job.check(Target(tmp_path / "out.keras"))
        with pytest.raises(SurgeryError, match="after the outputs were checked"):
            job.open(OTHER)


def test_unsafe_and_weights_only_inputs_are_refused_on_opening(tmp_path):
    with pytest.raises(UnsafeContentError), WriteJob("copy") as job:
        job.open(FIXTURES / "lambda_unsafe.keras")
    with pytest.raises(UsageError, match="weights only; copy needs a full model file"), WriteJob("copy") as job:
        job.open(FIXTURES / "lstm_sequential.weights.h5", needs="copy")


@pytest.mark.parametrize("failure", ["verification", "report", "write", "interrupt"])
def test_a_failure_leaves_nothing_behind(tmp_path, failure):
    out = tmp_path / "new" / "deeper" / "copy.keras"
    saved_model = tmp_path / "new" / "step"
    written = []

    def write(temps):
        shutil.copyfile(MODEL, temps[out])
        os.mkdir(temps[saved_model])
        (temps[saved_model] / "saved_model.pb").write_bytes(b"graph")
        written.append(sorted(temps))
        if failure == "write":
            raise RuntimeError("the writer broke half way")
        if failure == "interrupt":
            raise KeyboardInterrupt

    def verify(temps):
        assert temps[out].read_bytes() == MODEL.read_bytes()
        if failure == "verification":
            raise VerificationError("outputs differ: max |diff| 1.0")
        return Report(ok=failure != "report")

    expected = {"verification": VerificationError, "report": VerificationError, "write": RuntimeError,
                "interrupt": KeyboardInterrupt}[failure]
    with pytest.raises(expected), WriteJob("copy") as job:
        job.open(MODEL)
        job.check(Target(out), Target(saved_model, directory=True))
        job.write(write, verify=verify, manifests=model_manifest(out, saved_model))
    assert written == [sorted([out, saved_model])]
    # No artifact, no manifest, no temporary, and the directories the job made are gone again.
    assert leftovers(tmp_path) == []


def test_a_failing_report_names_its_summary(tmp_path):
    out = tmp_path / "copy.keras"
    with pytest.raises(VerificationError, match="the copy differs"), WriteJob("copy") as job:
        job.open(MODEL)
        job.check(Target(out))
        job.write(copy_into(MODEL, out), verify=lambda temps: Report(ok=False), manifests=model_manifest(out))
    assert leftovers(tmp_path) == []


def test_a_directory_that_was_there_is_kept_after_a_failure(tmp_path):
    outdir = tmp_path / "existing"
    outdir.mkdir()
    with pytest.raises(RuntimeError), WriteJob("copy") as job:
        job.open(MODEL)
        job.check(Target(outdir / "copy.keras"))
        raise RuntimeError("the operation's own rewrite failed")
    assert leftovers(tmp_path) == ["existing"]


def test_manifests_are_placed_before_their_artifacts(tmp_path, monkeypatch):
    out, extra = tmp_path / "copy.keras", tmp_path / "copy.tflite"
    placed = []
    rename = os.rename

    def watching_rename(src, dst, *args, **kwargs):
        # What a reader sees at the moment each output lands (--force places new files by rename).
        placed.append((os.path.basename(dst), os.path.exists(saving.manifest_path(out))))
        return rename(src, dst, *args, **kwargs)

    with WriteJob("copy", force=True) as job:
        job.open(MODEL)
        job.check(Target(out), Target(extra))
        monkeypatch.setattr(os, "rename", watching_rename)
        done = job.write(lambda temps: (shutil.copyfile(MODEL, temps[out]), temps[extra].write_bytes(b"tfl3")),
                         manifests=model_manifest(out))
        monkeypatch.undo()
    assert [name for name, _seen in placed] == ["copy.keras.manifest.json", "copy.keras", "copy.tflite"]
    assert all(seen for name, seen in placed if name != "copy.keras.manifest.json")
    assert set(done.manifests) == {out} and extra.read_bytes() == b"tfl3"
    assert json.loads(done.manifests[out].read_text())["verification"] is None


def test_several_outputs_are_committed_together(tmp_path):
    outdir = tmp_path / "split"
    encoder, decoder = outdir / "encoder.keras", outdir / "decoder_step.keras"
    with WriteJob("split", force=False) as job:
        job.open(MODEL)
        job.add_source(OTHER)
        job.check(Target(encoder), Target(decoder))
        done = job.write(lambda temps: (shutil.copyfile(MODEL, temps[encoder]), shutil.copyfile(OTHER, temps[decoder])),
                         manifests=model_manifest(encoder, decoder))
    assert leftovers(outdir) == ["decoder_step.keras", "decoder_step.keras.manifest.json",
                                 "encoder.keras", "encoder.keras.manifest.json"]
    assert decoder.read_bytes() == OTHER.read_bytes() and encoder.read_bytes() == MODEL.read_bytes()
    for target in (encoder, decoder):  # the first input is the source each manifest names
        source = json.loads(done.manifests[target].read_text())["source"]
        assert source == {"path": str(MODEL), "sha256": writers.sha256_of(MODEL)}
    assert job.sha256(OTHER) == writers.sha256_of(OTHER)


def test_an_operation_may_hash_its_own_way_and_write_its_own_manifest(tmp_path):
    out = tmp_path / "states.npz"
    with WriteJob("extract-states") as job:
        job.add_source(MODEL)
        job.add_source(OTHER, hashed=False)  # a data file: refused as output, not hashed
        job.check(Target(out), hashes=in_background(lambda path: f"size:{os.path.getsize(path)}"))
        assert job.sha256() == f"size:{os.path.getsize(MODEL)}" and job.sha256(OTHER) is None
        done = job.write(lambda temps: temps[out].write_bytes(b"npz"),
                         manifests=lambda: {out: {"operation": "extract-states", "model": job.sha256()}})
    assert json.loads(done.manifests[out].read_text()) == {"operation": "extract-states",
                                                           "model": f"size:{os.path.getsize(MODEL)}"}
