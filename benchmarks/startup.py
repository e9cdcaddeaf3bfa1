"""Start-up figures of issue 11: what a command costs beside (not in) its own work.

    python benchmarks/startup.py [--only inspect|expose] [--repeat 7] [--expose-repeat 3]

- `inspect`, whole process: `cli.py inspect MODEL --json` on the ~100 MB model (the CLI's
  supervising fork included), best of --repeat, beside bare `python -c pass` and
  `python -c "import click, h5py"` (the imports inspect cannot do without: h5py reads the
  weights member for the HDF5 safety scan, and brings NumPy). Measured twice, interleaved:
  as this checkout starts under PYTHONDONTWRITEBYTECODE=1 (every module of the package
  compiled from source at each start; the figure issue 11 quotes) and with a bytecode cache
  (PYTHONPYCACHEPREFIX pointing at a scratch folder warmed by one run: how an installed
  package starts).
- `inspect`, in-process: the 1000-layer config, best of --repeat after one warm-up call, in a
  child process that then asserts TensorFlow and Keras were never imported.
- verified `expose-state` on the demo fixture (fixtures/models/lstm_masking.keras, the default
  route: load, rewire, write, reload, check against the original and the NumPy oracle) as a
  whole process, against bare `python -c "import tensorflow, keras"`, interleaved, best of
  --expose-repeat; plus which optional Keras packages (tf_keras,
  tensorflow_model_optimization) the command imported, from one in-process run.

Models are generated once under benchmarks/data/ (ignored by git) by benchmarks/run.py.
Prints a Markdown table headed by the machine line (cores, lscpu model name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
DEMO = ROOT / "fixtures" / "models" / "lstm_masking.keras"
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import big_lstm_model, many_layers_model, print_table  # noqa: E402

CLI = [sys.executable, str(ROOT / "cli.py")]
OPTIONAL_KERAS = ("tf_keras", "tensorflow_model_optimization")


def timed(command: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in MB, CPU seconds: user + system) of one child process, its
    output discarded. CPU time moves less than wall time when other work shares the cores."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", report.name, *command], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        elapsed = time.perf_counter() - start
        rss, user, system = report.read().split()[-3:]
        return elapsed, int(rss) // 1024, float(user) + float(system)


def interleaved(repeat: int, commands: dict) -> dict:
    """{name: (best wall seconds, max peak RSS MB, best CPU seconds)}: each round runs every
    command once, in turn, so that load from elsewhere on the machine falls on all alike."""
    runs: dict = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (command, env) in commands.items():
            runs[name].append(timed(command, env))
    return {name: (min(r[0] for r in rs), max(r[1] for r in rs), min(r[2] for r in rs))
            for name, rs in runs.items()}


def bench_inspect_process(rows: list, repeat: int) -> None:
    model = big_lstm_model(DATA / "lstm_100mb.keras", 100)
    size = model.stat().st_size / 1e6
    inspect = [*CLI, "inspect", str(model), "--json"]
    source = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    source.pop("PYTHONPYCACHEPREFIX", None)
    with tempfile.TemporaryDirectory(prefix="startup-pycache-") as cache:
        cached = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        for env in (cached, source):  # warm the page cache and fill the bytecode cache
            timed(inspect, env)
            timed([sys.executable, "-c", "import click, h5py"], env)
        got = interleaved(repeat, {
            "source": (inspect, source),
            "cached": (inspect, cached),
            "pass": ([sys.executable, "-c", "pass"], source),
            "floor": ([sys.executable, "-c", "import click, h5py"], cached),
        })
    (source_s, rss, source_cpu), (cached_s, _, cached_cpu) = got["source"], got["cached"]
    (bare, _, bare_cpu), (floor, _, floor_cpu) = got["pass"], got["floor"]
    rows.append((f"inspect CLI, {size:.0f} MB model, whole process, no bytecode cache", f"{source_s:.3f} s",
                 f"target ≤ 0.3 s; CPU {source_cpu:.3f} s; every module compiled at start "
                 f"(PYTHONDONTWRITEBYTECODE=1); peak RSS {rss} MB; best of {repeat}, interleaved"))
    rows.append((f"inspect CLI, {size:.0f} MB model, whole process, bytecode cached", f"{cached_s:.3f} s",
                 f"CPU {cached_cpu:.3f} s; as an installed package starts; bare `python -c pass` "
                 f"{bare:.3f} s (CPU {bare_cpu:.3f} s), `import click, h5py` {floor:.3f} s (CPU {floor_cpu:.3f} s)"))


def bench_inspect_in_process(rows: list, repeat: int) -> None:
    layers = many_layers_model(DATA / "layers_1000.keras")
    code = (
        "import sys, time; from surgery.ops.inspect import inspect\n"
        f"inspect({str(layers)!r}); times = []\n"
        f"for _ in range({repeat}):\n"
        f"    t, c = time.perf_counter(), time.process_time(); inspect({str(layers)!r})\n"
        "    times.append((time.perf_counter() - t, time.process_time() - c))\n"
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'inspect imported TensorFlow'\n"
        "print(min(w for w, _ in times), min(c for _, c in times))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    wall, cpu = map(float, out.stdout.split())
    rows.append(("inspect, 1000-layer config, in-process", f"{wall:.3f} s",
                 f"target ≤ 0.3 s; CPU {cpu:.3f} s; best of {repeat} after a warm-up call; TensorFlow and "
                 "Keras not imported"))


def imported_optional_packages(command: list[str]) -> list[str]:
    """Which of OPTIONAL_KERAS one in-process (unsupervised) run of a CLI command imported."""
    code = (
        "import json, os, sys; os.environ['LSTM_SURGERY_SANDBOX'] = '0'\n"
        f"sys.argv = ['cli.py', *{command!r}]\n"
        "import cli\n"
        "try:\n    cli.entry()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
        f"print(json.dumps(sorted(set({list(OPTIONAL_KERAS)!r}) & set(sys.modules))), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stderr.strip().splitlines()[-1])


def bench_expose(rows: list, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="startup-expose-") as folder:
        out = str(Path(folder) / "exposed.keras")
        expose = ["expose-state", str(DEMO), "-o", out, "--force"]
        got = interleaved(repeat, {
            "expose": ([*CLI, *expose], None),
            "imports": ([sys.executable, "-c", "import tensorflow, keras"], None),
        })
        optional = imported_optional_packages(expose)
    (tool, rss, tool_cpu), (bare, _, bare_cpu) = got["expose"], got["imports"]
    rows.append(("verified expose-state, demo fixture (lstm_masking.keras), whole process",
                 f"{tool:.2f} s vs bare imports {bare:.2f} s",
                 f"**{tool / bare:.2f}×** `python -c \"import tensorflow, keras\"` (target ≤ 1.5×); CPU "
                 f"{tool_cpu:.2f} s vs {bare_cpu:.2f} s; peak RSS {rss} MB; imported "
                 f"{', '.join(optional) or 'neither'} of tf_keras, tfmot; best of {repeat}, interleaved"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["inspect", "expose"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--expose-repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list = []
    if args.only in (None, "inspect"):
        bench_inspect_process(rows, args.repeat)
        bench_inspect_in_process(rows, args.repeat)
    if args.only in (None, "expose"):
        bench_expose(rows, args.expose_repeat)
    print_table(rows)


if __name__ == "__main__":
    main()
