"""Pictures: the SVG parsed (nodes, edges, highlights), and rendered by headless Chromium (slow)."""

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
import xml.etree.ElementTree as ET

import pytest

from surgery.ops.plot import graph_of, plot

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "models"
SVG = "{http://www.w3.org/2000/svg}"


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def parsed(path):
    root = ET.parse(path).getroot()
    panels = [g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"]
    result = []
    for panel in panels:
        nodes = {g.get("data-name"): set(g.get("class").split()) - {"node"}
                 for g in panel.iter(f"{SVG}g") if (g.get("class") or "").startswith("node")}
        edges = {(e.get("data-from"), e.get("data-to")) for e in panel.iter(f"{SVG}path") if e.get("class") == "edge"}
        result.append((panel.get("data-title"), nodes, edges))
    return root, result


def assert_standalone(root, text):
    assert root.tag == f"{SVG}svg"
    assert not list(root.iter(f"{SVG}script")) and "<script" not in text.lower()
    assert "href" not in text and "url(http" not in text and "@import" not in text  # nothing external


def test_inspect_plot_draws_layers_edges_and_recurrent_sites(tmp_path):
    out = tmp_path / "pics" / "stacked.svg"  # a missing directory is created, as for any output
    result = run_cli("inspect", FIXTURES / "lstm_stacked.keras", "--plot", out)
    assert result.returncode == 0, result.stderr
    root, [(title, nodes, edges)] = parsed(out)
    assert_standalone(root, out.read_text())
    assert title == "lstm_stacked.keras"
    assert {n for n, kinds in nodes.items() if "recurrent" in kinds} == {"lstm", "lstm_1", "lstm_2"}
    assert ("lstm", "lstm_1") in edges and ("lstm_1", "lstm_2") in edges and ("lstm_2", "dense") in edges
    assert "input" in nodes["input_layer"] and "output" in nodes["dense"]


def test_graph_of_reads_keras2_and_functional_branches():
    graph = graph_of(FIXTURES / "seq2seq.keras")
    recurrent = [n for n, node in graph.nodes.items() if "recurrent" in node.kinds]
    assert len(recurrent) == 2
    encoder, decoder = recurrent
    assert graph.nodes[decoder].depth > graph.nodes[encoder].depth
    k2 = graph_of(FIXTURES / "keras2" / "k2_functional.h5")
    assert any("recurrent" in node.kinds for node in k2.nodes.values()) and k2.edges


def test_expose_plot_is_before_and_after_with_new_state_io(tmp_path):
    out = tmp_path / "change.svg"
    result = run_cli("expose-state", FIXTURES / "lstm_stacked.keras", "-o", tmp_path / "x.keras", "--inputs",
                     "--no-verify", "--plot", out)
    assert result.returncode == 0, result.stderr
    root, [(before_title, before, _), (after_title, after, after_edges)] = parsed(out)
    assert before_title.startswith("before") and after_title.startswith("after")
    assert not any({"state-in", "state-out", "added"} & kinds for kinds in before.values())
    added = {n for n, kinds in after.items() if "added" in kinds}
    assert {n for n, kinds in after.items() if "state-in" in kinds} == {f"{s}_{r}_in" for s in ("lstm", "lstm_1", "lstm_2")
                                                                        for r in ("h", "c")}
    assert {n for n, kinds in after.items() if "state-out" in kinds} == {f"{s}_{r}" for s in ("lstm", "lstm_1", "lstm_2")
                                                                         for r in ("h", "c")}
    assert added == {n for n, kinds in after.items() if kinds & {"state-in", "state-out"}}
    assert ("lstm_1_h_in", "lstm_1") in after_edges and ("lstm_2", "lstm_2_c") in after_edges


def test_plot_refuses_a_non_svg_name_and_several_models(tmp_path):
    bad = run_cli("inspect", FIXTURES / "gru.keras", "--plot", tmp_path / "x.png")
    assert bad.returncode == 2 and "SVG" in bad.stderr
    many = run_cli("inspect", FIXTURES / "gru.keras", FIXTURES / "lstm_stacked.keras", "--plot", tmp_path / "x.svg")
    assert many.returncode == 2 and "one MODEL" in many.stderr


def _png_pixels(path):
    """(width, height, set of distinct RGB(A) rows' bytes) of an 8-bit RGB/RGBA PNG, no Pillow."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    channels = {2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    rows, previous = [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        for i in range(len(line)):  # undo the PNG filters
            a = line[i - channels] if i >= channels else 0
            b, c = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    colors = {row[i:i + 3] for row in rows[::4] for i in range(0, len(row), channels * 4)}
    return width, height, colors


@pytest.mark.slow
def test_the_svg_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("chromium is not installed: `apt-get install -y chromium` (make test-slow does it)")
    svg = tmp_path / "change.svg"
    result = run_cli("expose-state", FIXTURES / "lstm_stacked.keras", "-o", tmp_path / "x.keras", "--inputs",
                     "--no-verify", "--plot", svg)
    assert result.returncode == 0, result.stderr
    png = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", f"--screenshot={png}", "--window-size=1400,900", svg.as_uri()],
                   capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert png.is_file(), "chromium wrote no screenshot"
    width, height, colors = _png_pixels(png)
    assert (width, height) == (1400, 900)
    # Not blank: white background, the orange of the recurrent boxes, the green of the state I/O.
    assert len(colors) > 20, len(colors)
    assert any(r > 240 and 200 < g < 235 and b < 200 for r, g, b in colors)  # recurrent #ffe2b8
    assert any(r < 230 and g > 235 and b < 230 for r, g, b in colors)  # state I/O #d4f4dd
