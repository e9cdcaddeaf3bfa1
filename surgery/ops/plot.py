"""Pictures of model graphs: a standalone SVG (no external resources, no JavaScript).

Static, like `inspect`: the graph comes from the saved config (layers as boxes, edges from
their inbound nodes), TensorFlow is not loaded. Recurrent sites and state inputs/outputs are
highlighted; for a writing command the input and what it wrote are drawn side by side, with the
layers the command added marked. Layout: one row per graph depth (longest path from an input).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from surgery.errors import NotSupportedError, SurgeryError, UsageError

BOX_H, ROW_GAP, COL_GAP, PAD, CHAR_W, TITLE_H = 44, 40, 18, 24, 7.2, 34
COLORS = {  # fill, stroke: readable on white, distinct in grey too
    "layer": ("#f4f6f8", "#5b6770"),
    "input": ("#e8eef7", "#3b5b92"),
    "recurrent": ("#ffe2b8", "#c25e00"),
    "state-in": ("#d4f4dd", "#1e7b3a"),
    "state-out": ("#d4f4dd", "#1e7b3a"),
}
LEGEND = [("recurrent", "recurrent layer"), ("state-in", "state input / output"),
          ("input", "model input"), ("added", "added by this command (dashed)")]


@dataclass
class Node:
    name: str
    cls: str
    kinds: set = field(default_factory=set)  # input, output, recurrent, state-in, state-out, added
    depth: int = 0


@dataclass
class Graph:
    title: str
    nodes: dict  # name -> Node, in config order
    edges: list  # (source, target)
    note: str = ""


def graph_of(source, title: str | None = None) -> Graph:
    """The graph of a model file (any format `inspect` reads), statically."""
    from surgery.io import formats
    from surgery.ops import state_io

    artifact = formats.read_artifact(source)
    title = title or Path(source).name
    if artifact.weights_only or not artifact.model_config:
        return Graph(title, {"weights": Node("weights", "weights only")}, [], "no model graph in the file")
    manifest = state_io.read_manifest(artifact.path)
    return graph_from_config(artifact.model_config, artifact.family, title, manifest)


def graph_from_config(model_config: dict, family: str, title: str, manifest: dict | None = None) -> Graph:
    from surgery.graph import registry
    from surgery.ops import state_io
    from surgery.graph.level import Level, dialect_for, is_model_entry, top_level_entry

    dialect = dialect_for(family)
    try:
        level = Level(top_level_entry(model_config), dialect)
    except NotSupportedError:  # subclassed: one box, what the config says
        cls = model_config.get("class_name", "?")
        return Graph(title, {"model": Node((model_config.get("config") or {}).get("name", "model"), cls)}, [],
                     "subclassed model: no graph in its config")
    try:
        found = state_io.find_state_io(model_config, family, manifest)
    except SurgeryError:
        found = state_io.StateIO()
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str]] = []
    for entry in level.layers:
        name = Level.name_of(entry)
        node = nodes[name] = Node(name, _label_class(entry))
        if entry.get("class_name") == "InputLayer":
            node.kinds.add("state-in" if name in found.inputs else "input")
        if registry.is_recurrent(entry) or (is_model_entry(entry) and _holds_recurrent(entry)):
            node.kinds.add("recurrent")
        if name in found.outputs:
            node.kinds.add("state-out")
        for inbound in entry.get("inbound_nodes", []) or []:
            for tensor in dialect.iter_tensors(inbound):
                edge = (dialect.ref_of(tensor)[0], name)
                if edge not in edges:
                    edges.append(edge)
    for ref in _refs(level.config.get("output_layers")):
        if ref in nodes:
            nodes[ref].kinds.add("output")
            if ref in found.outputs:
                nodes[ref].kinds.add("state-out")
    edges = [(a, b) for a, b in edges if a in nodes and b in nodes]
    _depths(nodes, edges)
    return Graph(title, nodes, edges)


def _refs(structure) -> list[str]:
    """Layer names in an input_layers/output_layers structure (either family)."""
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str) \
            and isinstance(structure[1], int):
        return [structure[0]]
    if isinstance(structure, (list, tuple)):
        return [name for item in structure for name in _refs(item)]
    if isinstance(structure, dict):
        return [name for item in structure.values() for name in _refs(item)]
    return []


def _label_class(entry: dict) -> str:
    from surgery.graph import registry

    cls = entry.get("class_name", "?")
    inner = registry.unwrap(entry)
    if inner is not entry and inner.get("class_name") != cls:
        cls = f"{cls}({inner.get('class_name')})"
    units = (inner.get("config") or {}).get("units") if isinstance(inner.get("config"), dict) else None
    return f"{cls} {units}" if units else cls


def _holds_recurrent(entry: dict) -> bool:
    from surgery.graph import registry

    return any(registry.is_recurrent(layer) or _holds_recurrent(layer)
               for layer in (entry.get("config") or {}).get("layers", []) if isinstance(layer, dict))


def _depths(nodes: dict, edges: list) -> None:
    """Longest path from a source; a cycle (never in a valid config) stops at len(nodes)."""
    for _ in range(len(nodes)):
        changed = False
        for a, b in edges:
            if nodes[b].depth < nodes[a].depth + 1 <= len(nodes):
                nodes[b].depth = nodes[a].depth + 1
                changed = True
        if not changed:
            break
    # A source (a state input) sits just above the first layer it feeds, not in the top row.
    targets: dict[str, list[int]] = {}
    has_inbound = {b for _a, b in edges}
    for a, b in edges:
        targets.setdefault(a, []).append(nodes[b].depth)
    for name, node in nodes.items():
        if name not in has_inbound and name in targets:
            node.depth = max(0, min(targets[name]) - 1)


def mark_added(before: Graph, after: Graph) -> Graph:
    """Mark the layers of `after` that `before` does not have (what a command added)."""
    for name, node in after.nodes.items():
        if name not in before.nodes:
            node.kinds.add("added")
    return after


# -- drawing -------------------------------------------------------------------------------

def _layout(graph: Graph) -> tuple[dict, float, float]:
    """{name: (x, y, w)} relative to the panel, and the panel's width and height."""
    rows: dict[int, list[Node]] = {}
    for node in graph.nodes.values():
        rows.setdefault(node.depth, []).append(node)
    widths = {n.name: max(len(n.name), len(n.cls)) * CHAR_W + 20 for n in graph.nodes.values()}
    row_widths = {d: sum(widths[n.name] for n in row) + COL_GAP * (len(row) - 1) for d, row in rows.items()}
    width = max([*row_widths.values(), len(graph.title) * 8.5, 160])
    places = {}
    for depth, row in sorted(rows.items()):
        x = (width - row_widths[depth]) / 2
        for node in row:
            places[node.name] = (x, TITLE_H + depth * (BOX_H + ROW_GAP), widths[node.name])
            x += widths[node.name] + COL_GAP
    height = TITLE_H + (max(rows) + 1) * (BOX_H + ROW_GAP) if rows else TITLE_H
    return places, width, height


def _style(node: Node) -> tuple[str, str]:
    for kind in ("state-in", "state-out", "recurrent", "input"):
        if kind in node.kinds:
            return COLORS[kind]
    return COLORS["layer"]


def _panel(graph: Graph, ox: float) -> tuple[list[str], float, float]:
    places, width, height = _layout(graph)
    out = [f'<g class="panel" data-title="{escape(graph.title, {chr(34): "&quot;"})}">',
           f'<text class="title" x="{ox + width / 2:.1f}" y="20" text-anchor="middle">{escape(graph.title)}</text>']
    if graph.note:
        out.append(f'<text class="note" x="{ox + width / 2:.1f}" y="{height + 8:.1f}" text-anchor="middle">'
                   f'{escape(graph.note)}</text>')
    for a, b in graph.edges:
        xa, ya, wa = places[a]
        xb, yb, wb = places[b]
        x1, y1, x2, y2 = ox + xa + wa / 2, ya + BOX_H, ox + xb + wb / 2, yb
        mid = (y1 + y2) / 2
        out.append(f'<path class="edge" data-from="{_attr(a)}" data-to="{_attr(b)}" '
                   f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2 - 2:.1f}" '
                   f'marker-end="url(#arrow)"/>')
    for name, node in graph.nodes.items():
        x, y, w = places[name]
        fill, stroke = _style(node)
        kinds = " ".join(sorted(node.kinds))
        dash = ' stroke-dasharray="5,3"' if "added" in node.kinds else ""
        thick = 2.5 if node.kinds & {"recurrent", "state-in", "state-out"} else 1.2
        out.append(f'<g class="node {kinds}" data-name="{_attr(name)}" data-class="{_attr(node.cls)}">'
                   f'<rect x="{ox + x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{BOX_H}" rx="6" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{thick}"{dash}/>'
                   f'<text x="{ox + x + w / 2:.1f}" y="{y + 18:.1f}" text-anchor="middle" class="name">'
                   f'{escape(name)}</text>'
                   f'<text x="{ox + x + w / 2:.1f}" y="{y + 34:.1f}" text-anchor="middle" class="cls">'
                   f'{escape(node.cls)}</text></g>')
    out.append("</g>")
    return out, width, height + (16 if graph.note else 0)


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def render_svg(graphs: list[Graph]) -> str:
    """One SVG: the graphs side by side (before, after), a legend below."""
    if not graphs:
        raise UsageError("nothing to draw")
    parts, x, height = [], PAD, 0.0
    for index, graph in enumerate(graphs):
        if index:
            parts.append(f'<line class="divider" x1="{x - PAD / 2 - 10:.1f}" y1="10" '
                         f'x2="{x - PAD / 2 - 10:.1f}" y2="@H@" />')
        panel, width, panel_height = _panel(graph, x)
        parts.extend(panel)
        x += width + PAD * 2 + 20
        height = max(height, panel_height)
    total_w = max(x - PAD - 20, 420)
    legend_y = height + 10
    legend = ['<g class="legend">']
    lx = PAD
    for kind, text in LEGEND:
        fill, stroke = COLORS.get(kind, COLORS["layer"])
        dash = ' stroke-dasharray="5,3"' if kind == "added" else ""
        legend.append(f'<rect x="{lx}" y="{legend_y:.1f}" width="18" height="14" rx="3" fill="{fill}" '
                      f'stroke="{stroke}" stroke-width="2"{dash}/>'
                      f'<text x="{lx + 24}" y="{legend_y + 12:.1f}" class="cls">{escape(text)}</text>')
        lx += 24 + len(text) * 6.6 + 18
    legend.append("</g>")
    total_w = max(total_w, lx)
    total_h = legend_y + 30
    body = "\n".join(parts).replace("@H@", f"{height:.1f}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
        '<style>.title{font-size:15px;font-weight:bold;fill:#1c2226}.name{font-size:12px;fill:#1c2226}'
        '.cls{font-size:11px;fill:#4a545b}.note{font-size:11px;fill:#8a4b00}'
        '.edge{fill:none;stroke:#7d8a94;stroke-width:1.4}.divider{stroke:#c9d0d5;stroke-dasharray:4,4}</style>\n'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#7d8a94"/></marker></defs>\n'
        f'<rect width="100%" height="100%" fill="#ffffff"/>\n{body}\n' + "\n".join(legend) + "\n</svg>\n"
    )


def plot(sources: list, out: str | os.PathLike, titles: list[str] | None = None, *, force: bool = True) -> Path:
    """Draw each model file (the first is 'before') side by side into `out` (.svg), atomically.
    The layers each later model has and the first has not are marked as added."""
    from surgery.io import saving

    out = Path(out)
    if out.suffix.lower() != ".svg":
        raise UsageError(f"--plot {str(out)!r}: the picture is an SVG file; name it .svg")
    saving.check_disjoint(sources, out)
    saving.make_output_directory(out.parent)
    graphs = [graph_of(s, t) if index == 0 else _graph_or_note(s, t)
              for index, (s, t) in enumerate(zip(sources, titles or [None] * len(sources)))]
    for graph in graphs[1:]:
        mark_added(graphs[0], graph)
    temp = out.with_name(f".{out.name}{saving.TEMP_MARKER}tmp")
    temp.write_text(render_svg(graphs))
    os.replace(temp, out)
    return out


def _graph_or_note(source, title: str | None) -> Graph:
    """What a command wrote may have no Keras graph to read (a step model's plain SavedModel):
    its panel then says so, and the command, already done, does not fail over a picture."""
    try:
        return graph_of(source, title)
    except SurgeryError as error:
        name = Path(source).name
        return Graph(title or name, {name: Node(name, "no Keras graph in the file")}, [], str(error)[:90])
