"""Writes: never onto, into or around an input; exclusive without --force; manifest first;
umask modes; the temp log a supervising parent cleans up from; one-line errors on a full disk."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import FIXTURES, ROOT
from surgery.io import formats, saving
from surgery.errors import UsageError
from surgery.ops.expose import expose_state_file as expose_state

MODEL = FIXTURES / "lstm_sequential.keras"
H5_MODEL = FIXTURES / "lstm_sequential.h5"
SAVEDMODEL = FIXTURES / "keras2" / "k2_savedmodel"
SEQ2SEQ = FIXTURES / "seq2seq.keras"


def cli(*args, env=None, umask=None):
    command = [sys.executable, str(ROOT / "cli.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=_env(env),
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def _env(extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(saving.TEMP_LOG_ENV, None)
    env.update(extra or {})
    return env


def snapshot(root):
    """Every entry under root: relative path -> sha256 (files), 'dir' or 'link -> target'."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            out[key] = "dir"
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def temporaries(root):
    return [p for p in root.rglob("*") if saving.TEMP_MARKER in p.name]


@pytest.fixture
def work(tmp_path):
    """tmp/work holding the input model and a sibling, for overlap checks."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(MODEL, work / "model.keras")
    (work / "notes.txt").write_text("a sibling that must survive\n")
    return work


# ---------------------------------------------------------------------------------------
# Never onto, into or around an input


@pytest.mark.parametrize("force", [False, True])
def test_output_directory_containing_the_input_is_refused(work, force):
    before = snapshot(work.parent)
    for target in (work, work.parent):
        result = cli("expose-state", work / "model.keras", "-o", target, "--no-verify", *(["--force"] * force))
        assert result.returncode == 2, result.stderr
        assert "contains the input" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(work.parent) == before


@pytest.mark.parametrize("force", [False, True])
def test_savedmodel_input_and_outputs_around_or_inside_it_are_refused(tmp_path, force):
    work = tmp_path / "work"
    shutil.copytree(SAVEDMODEL, work / "sm")
    (work / "notes.txt").write_text("sibling\n")
    before = snapshot(tmp_path)
    flags = ["--no-verify", *(["--force"] * force)]
    for target, words in ((work, "contains the input"), (work / "sm" / "out.keras", "inside the input"),
                          (work / "sm" / "variables", "inside the input"), (work / "sm", "onto the input")):
        result = cli("expose-state", work / "sm", "-o", target, *flags)
        assert result.returncode == 2 and words in result.stderr, (target, result.stderr)
    assert snapshot(tmp_path) == before


def test_an_output_path_through_a_symlink_into_the_input_is_refused(tmp_path):
    shutil.copytree(SAVEDMODEL, tmp_path / "sm")
    os.symlink(tmp_path / "sm", tmp_path / "alias")
    before = snapshot(tmp_path)
    result = cli("expose-state", tmp_path / "sm", "-o", tmp_path / "alias" / "out.keras", "--force", "--no-verify")
    assert result.returncode == 2 and "inside the input" in result.stderr
    assert snapshot(tmp_path) == before


def test_the_manifest_path_may_not_be_the_input(tmp_path):
    source = tmp_path / "m.keras.manifest.json"
    shutil.copy(MODEL, source)
    with pytest.raises(UsageError, match="onto the input"):
        saving.check_output(source, tmp_path / "m.keras", True)


@pytest.mark.parametrize("force", [False, True])
def test_seq2seq_output_directory_around_the_input_is_refused(tmp_path, force):
    shutil.copy(SEQ2SEQ, tmp_path / "seq2seq.keras")
    before = snapshot(tmp_path)
    result = cli("split-seq2seq", tmp_path / "seq2seq.keras", "-o", tmp_path, "--no-verify", *(["--force"] * force))
    assert result.returncode == 2 and "contains the input" in result.stderr, result.stderr
    assert snapshot(tmp_path) == before


def test_stream_output_directory_around_the_input_is_refused(work):
    before = snapshot(work)
    result = cli("stream", work / "model.keras", "-o", work, "--force", "--no-verify")
    assert result.returncode == 2 and "contains the input" in result.stderr, result.stderr
    assert snapshot(work) == before


def test_stream_tflite_path_colliding_with_the_manifest_is_refused(work, tmp_path):
    out = tmp_path / "step_sm"
    result = cli("stream", work / "model.keras", "-o", out, "--tflite", saving.manifest_path(out), "--no-verify")
    assert result.returncode == 2 and "collides" in result.stderr, result.stderr
    assert not out.exists() and not saving.manifest_path(out).exists()


# ---------------------------------------------------------------------------------------
# What --force may replace


def test_force_never_replaces_a_directory_that_is_not_an_output(work, tmp_path):
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.tex").write_text("years of work\n")
    before = snapshot(home)
    result = cli("expose-state", work / "model.keras", "-o", home, "--force", "--no-verify")
    assert result.returncode == 2 and "refusing to replace the directory" in result.stderr, result.stderr
    assert snapshot(home) == before and not temporaries(tmp_path)


def test_force_refuses_a_directory_where_a_file_is_wanted_and_the_reverse(work, tmp_path):
    (tmp_path / "dir.keras").mkdir()
    (tmp_path / "plainfile").write_text("x")
    before = snapshot(tmp_path)
    result = cli("expose-state", work / "model.keras", "-o", tmp_path / "dir.keras", "--force", "--no-verify")
    assert result.returncode == 2 and "is a directory" in result.stderr
    result = cli("expose-state", work / "model.keras", "-o", tmp_path / "plainfile", "--force", "--no-verify")
    assert result.returncode == 2 and "is a file" in result.stderr
    assert snapshot(tmp_path) == before


def test_force_replaces_a_symlink_itself_never_its_target(work, tmp_path):
    victim = tmp_path / "victim.keras"
    victim.write_text("not to be written through\n")
    os.symlink(victim, tmp_path / "out.keras")
    result = cli("expose-state", work / "model.keras", "-o", tmp_path / "out.keras", "--force", "--no-verify")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "not to be written through\n"
    assert not (tmp_path / "out.keras").is_symlink() and zipfile.is_zipfile(tmp_path / "out.keras")


def test_force_replaces_a_previous_savedmodel_output(tmp_path):
    out = tmp_path / "sm_out"
    shutil.copytree(SAVEDMODEL, out)  # a SavedModel directory: --force may replace it
    (out / "stale.txt").write_text("from the old one\n")
    expose_state(MODEL, out, fmt="savedmodel", verify=False, force=True)
    assert (out / "saved_model.pb").is_file() and not (out / "stale.txt").exists()
    assert json.loads(saving.manifest_path(out).read_text())["format"] == "savedmodel"
    assert not temporaries(tmp_path)


# ---------------------------------------------------------------------------------------
# Exclusive creation without --force


def _winner(path, manifest=False):
    path.write_bytes(b"the winner's artifact")
    if manifest:
        saving.manifest_path(path).write_text('{"lstm_surgery": "winner"}')


@pytest.mark.parametrize("winner_manifest", [False, True])
def test_an_output_that_appears_during_the_run_is_left_to_the_winner(tmp_path, monkeypatch, winner_manifest):
    out = tmp_path / "out.keras"
    commit = saving.Outputs.commit

    def late_arrival(self, manifests=None):
        _winner(out, winner_manifest)  # between the early check and the commit
        return commit(self, manifests)

    monkeypatch.setattr(saving.Outputs, "commit", late_arrival)
    with pytest.raises(UsageError, match="appeared while this run was writing it") as error:
        expose_state(MODEL, out, verify=False)
    assert error.value.exit_code == 2
    assert out.read_bytes() == b"the winner's artifact"
    manifest = saving.manifest_path(out)
    assert manifest.exists() == winner_manifest
    if winner_manifest:
        assert json.loads(manifest.read_text()) == {"lstm_surgery": "winner"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name] + [manifest.name] * winner_manifest)


def test_two_concurrent_runs_one_wins_cleanly(tmp_path):
    out = tmp_path / "out.keras"
    command = [sys.executable, str(ROOT / "cli.py"), "expose-state", str(MODEL), "-o", str(out), "--json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=_env()) for _ in range(2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _out, _err in results)
    assert codes == [0, 2], results
    loser = next(err for code, _out, err in results if code == 2)
    assert "appeared while this run was writing it" in loser or "exists" in loser
    manifest = json.loads(saving.manifest_path(out).read_text())
    assert manifest["verification"]["ok"] is True
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
    assert formats.read_artifact(out).model_config is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.keras", "out.keras.manifest.json"]


# ---------------------------------------------------------------------------------------
# Manifest first; failures leave nothing


def test_artifact_move_failing_removes_the_manifest_placed_first(tmp_path, monkeypatch):
    out = tmp_path / "out.keras"
    moves = []
    real = saving._rename_noreplace

    def second_move_fails(temp, dest, directory):
        moves.append(dest.name)
        if len(moves) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dest))
        return real(temp, dest, directory)

    monkeypatch.setattr(saving, "_rename_noreplace", second_move_fails)
    with pytest.raises(UsageError, match="Input/output error") as error:
        expose_state(MODEL, out, verify=False)
    assert error.value.exit_code == 2
    assert moves == ["out.keras.manifest.json", "out.keras"]  # the manifest goes first
    assert list(tmp_path.iterdir()) == []


def test_force_artifact_move_failing_restores_the_old_pair(tmp_path, monkeypatch):
    out = tmp_path / "out.keras"
    out.write_bytes(b"the old artifact")
    saving.manifest_path(out).write_text('{"lstm_surgery": "old"}')
    before = snapshot(tmp_path)
    real_replace = os.replace
    calls = []

    def second_replace_fails(src, dst, *args, **kwargs):
        calls.append(os.path.basename(dst))
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(saving.os, "replace", second_replace_fails)
    with pytest.raises(UsageError):
        expose_state(MODEL, out, verify=False, force=True)
    monkeypatch.undo()
    assert calls[:2] == ["out.keras.manifest.json", "out.keras"]
    assert snapshot(tmp_path) == before  # the old artifact with its old manifest, nothing else


def _full_disk(source, dest, config, **_options):
    with open(dest, "wb") as handle:
        handle.write(b"PK partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))


@pytest.mark.parametrize("force", [False, True])
def test_a_full_disk_is_a_one_line_usage_error_and_leaves_nothing(tmp_path, monkeypatch, force):
    monkeypatch.setattr(formats, "write_keras_zip", _full_disk)
    out = tmp_path / "out.keras"
    with pytest.raises(UsageError) as error:
        expose_state(MODEL, out, verify=False, force=force)
    message = str(error.value)
    assert error.value.exit_code == 2 and "No space left on device" in message and str(out) in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_through_the_cli_exits_2(tmp_path):
    out = tmp_path / "out.keras"
    code = (
        "import errno, os, sys\n"
        "from surgery.io import formats\n"
        "def full(source, dest, config, **options):\n"
        "    open(dest, 'wb').write(b'partial')\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))\n"
        "formats.write_keras_zip = full\n"
        "sys.argv = ['lstm-surgery', 'expose-state', sys.argv[1], '-o', sys.argv[2], '--no-verify']\n"
        "sys.path.insert(0, os.getcwd())\n"
        "import cli\n"
        "cli.main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(MODEL), str(out)], capture_output=True, text=True,
                            cwd=ROOT, env=_env({"LSTM_SURGERY_SANDBOX": "0"}))
    assert result.returncode == 2, result.stderr
    assert "No space left on device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_any_exception_inside_a_write_removes_the_temporaries(tmp_path, monkeypatch, exception):
    def interrupted(source, dest, config, **_options):
        open(dest, "wb").write(b"partial")
        raise exception()

    monkeypatch.setattr(formats, "write_keras_zip", interrupted)
    with pytest.raises(exception):
        expose_state(MODEL, tmp_path / "out.keras", verify=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# Modes under the umask


def _modes(root):
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_modes_the_umask_gives(tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    outputs = {"out.keras": MODEL, "out.h5": H5_MODEL, "out_sm": MODEL}
    for name, source in outputs.items():
        result = cli("expose-state", source, "-o", tmp_path / name, "--no-verify", umask=umask)
        assert result.returncode == 0, result.stderr
    modes = _modes(tmp_path)
    del modes["."]
    for name, mode in modes.items():
        expected = dir_mode if (tmp_path / name).is_dir() else file_mode
        assert mode == expected, (name, oct(mode), oct(expected))
    assert {"out.keras.manifest.json", "out.h5.manifest.json", "out_sm.manifest.json",
            "out_sm/saved_model.pb", "out_sm/variables"} <= set(modes)


def test_umask_is_read_without_changing_it():
    old = os.umask(0o027)
    try:
        assert saving._umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------
# The temp log a supervising parent cleans up from


def test_a_run_killed_mid_write_is_cleaned_up_from_the_temp_log(tmp_path):
    log = tmp_path / "temps.log"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.keras"
    code = ("import sys\nfrom surgery.ops.expose import expose_state_file\n"
            "expose_state_file(sys.argv[1], sys.argv[2])\n")  # verifies: the temporary lives for seconds
    process = subprocess.Popen([sys.executable, "-c", code, str(MODEL), str(out)], cwd=ROOT,
                               env=_env({saving.TEMP_LOG_ENV: str(log)}), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            logged = log.read_text().split() if log.exists() else []
            if any(os.path.exists(path) for path in logged):
                break
            time.sleep(0.005)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before a temporary was seen"
    assert temporaries(out_dir), "the kill came while a temporary existed"
    logged = log.read_text().splitlines()
    assert all(os.path.isabs(line) and saving.TEMP_MARKER in line for line in logged)
    removed = saving.cleanup_logged_temps(log)
    assert removed and not temporaries(out_dir) and not out.exists()
    assert saving.cleanup_logged_temps(log) == []  # idempotent


def test_cleanup_ignores_what_a_hostile_log_names(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep\n")
    named_like_ours = tmp_path / f".x{saving.TEMP_MARKER}0123456789abcdef"
    os.symlink(precious, named_like_ours)  # ours by name, but only the link may go
    ours = saving.temp_path(tmp_path / "y.keras")
    ours.write_text("left by a killed run")
    log = tmp_path / "log"
    log.write_text("\n".join([
        str(precious), str(precious / "data.txt"), "relative/.z.lstm-surgery-tmp-0123456789abcdef",
        f"{named_like_ours}/../precious", str(tmp_path / f".w{saving.TEMP_MARKER}nothex"),
        str(named_like_ours), str(ours), "",
    ]))
    removed = saving.cleanup_logged_temps(log)
    assert sorted(removed) == sorted([named_like_ours, ours])
    assert (precious / "data.txt").read_text() == "keep\n"


def test_every_temporary_is_logged_before_it_exists(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv(saving.TEMP_LOG_ENV, str(log))
    seen = []
    real_open = os.open

    def watching_open(path, flags, *args, **kwargs):
        if saving.TEMP_MARKER in os.fspath(path) and flags & os.O_CREAT:
            seen.append((os.fspath(path), os.fspath(path) in log.read_text().splitlines()))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(saving.os, "open", watching_open)
    expose_state(MODEL, tmp_path / "out.keras", verify=False)
    monkeypatch.undo()
    assert len(seen) == 2 and all(logged for _path, logged in seen)  # the artifact and its manifest
    assert all(not os.path.exists(line) for line in log.read_text().splitlines())
