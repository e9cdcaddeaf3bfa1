"""The package's shape, read statically from its source: imports go one way (ops -> check ->
graph, ops -> io; nothing below imports what sits above it), no module over 600 lines, no
module reaches into another's private (_underscore) names, and cli.py stays thin."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "surgery"
MAX_LINES = 600

# Folder -> the surgery.* parts its modules may import (besides their own folder). Top-level
# modules (api.py, __init__.py) sit above every folder; commands/ only under cli.py.
ALLOWED = {
    "graph": {"graph", "errors"},
    "check": {"check", "graph", "io", "errors", "__version__"},
    "io": {"io", "graph", "errors", "__version__"},
    "ops": {"ops", "check", "graph", "io", "errors", "progress", "__version__"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every surgery.* import, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "surgery":
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names if alias.name.split(".")[0] == "surgery")
    return found


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _targets(module: str, names: list[str]) -> list[str]:
    """The surgery.* things an import names: `from surgery import x` names surgery.x."""
    if module == "surgery":
        return [f"surgery.{name}" for name in names]
    return [module]


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_go_one_way(folder):
    wrong = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for line, module, names in _imports(path):
            for target in _targets(module, names):
                part = target.split(".")[1] if "." in target else target
                if part not in ALLOWED[folder]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, f"surgery/{folder}/ may import only {sorted(ALLOWED[folder])}:\n" + "\n".join(wrong)


def test_only_cli_imports_the_commands():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in _modules() if "commands" not in path.relative_to(PACKAGE).parts
             for line, module, names in _imports(path)
             if any(target.startswith("surgery.commands") for target in _targets(module, names))]
    assert not wrong, "\n".join(wrong)


def test_no_module_over_600_lines():
    long = {str(path.relative_to(ROOT)): count for path in [*_modules(), ROOT / "cli.py"]
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_cli_stays_thin():
    # The bound: past ~400 lines, commands move into surgery/commands/.
    assert len((ROOT / "cli.py").read_text().splitlines()) <= 400


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_uses_another_modules_private_names():
    wrong = []
    for path in [*_modules(), ROOT / "cli.py"]:
        own = _name(path) if path.is_relative_to(PACKAGE) else "cli"
        tree = ast.parse(path.read_text(), str(path))
        modules_bound = {}  # local name -> the surgery module it is bound to
        for line, module, names in _imports(path):
            for name in names:
                if _private(name) and module != own:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("surgery"):
                for alias in node.names:
                    if _is_module(f"{node.module}.{alias.name}"):
                        modules_bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("surgery.") and alias.asname:
                        modules_bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules_bound and _private(node.attr)
                    and modules_bound[node.value.id] != own):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                             f"{modules_bound[node.value.id]}.{node.attr}")
    assert not wrong, "private names used across modules:\n" + "\n".join(sorted(set(wrong)))


def test_the_checks_see_the_package():
    # Guards the guards: a scan that read nothing would pass every test above.
    assert len(_modules()) > 50
    assert any(module == "surgery.graph.level" for path in (PACKAGE / "graph").glob("*.py")
               for _line, module, _names in _imports(path))
