"""The house rules: a module imports only from its own layer or lower ones, at module level or inside a
function (docs/architecture.md draws them), and every module and function can be read on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each installed subpackage lives in the checkout (pyproject's package-dir).
FOLDERS = {"msvit_edge": "msvit_edge", "msvit_edge.cli": "cli", "msvit_edge.calibration": "calibration",
           "msvit_edge.engines": "engines"}  # fmt: skip
# Lowest first. A module belongs to the longest prefix listed here.
LAYERS = [
    ["msvit_edge", "msvit_edge.errors", "msvit_edge.io", "msvit_edge.reporting"],
    ["msvit_edge.machine"],
    ["msvit_edge.bundle"],
    ["msvit_edge.data"],
    ["msvit_edge.model"],
    ["msvit_edge.training"],
    ["msvit_edge.engines"],
    ["msvit_edge.calibration"],
    ["msvit_edge.export"],
    ["msvit_edge.build"],
    ["msvit_edge.measure"],
    ["msvit_edge.serve"],
    ["msvit_edge.demo", "msvit_edge.cli", "msvit_edge.__main__"],
]
RANK = {prefix: rank for rank, prefixes in enumerate(LAYERS) for prefix in prefixes}


def layer(module: str) -> int:
    parts = module.split(".")
    return next(RANK[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in RANK)


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            found[".".join((package, *parts)).removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every msvit_edge module ``path`` imports, wherever the import statement stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import name` may name a submodule: count it when it is one
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] == "msvit_edge"]


def test_the_layer_table_covers_every_module():
    assert all(layer(m) >= 0 for m in modules())  # StopIteration (a failure) for a module outside every layer


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_a_higher_layer(module):
    path = modules()[module]
    upward = [f"{path.relative_to(ROOT)}:{line} imports {target}" for line, target in imports(path)
              if layer(target) > layer(module)]  # fmt: skip
    assert not upward, "\n".join(upward)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    """The check would catch a lazy upward import, not only a module-level one."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from msvit_edge.measure.bench import bench\n")
    assert imports(probe) == [(2, "msvit_edge.measure.bench.bench")]
    assert layer("msvit_edge.measure.bench.bench") > layer("msvit_edge.bundle.reader")


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_and_functions_fit_on_a_screen(module):
    """No module over 300 lines, no function over 60: each one can be read whole."""
    path = modules()[module]
    source = path.read_text()
    assert len(source.splitlines()) <= 300, f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > 60]  # fmt: skip
    assert not long, f"{path.relative_to(ROOT)}: {', '.join(long)}"


def test_the_architecture_map_names_every_folder_and_module():
    """docs/architecture.md is the newcomer's map: it names each subpackage and each module in it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    stems = {m.rsplit(".", 1)[-1] for m in modules() if m.count(".") >= 1} - {"__main__"}
    packages = {m.split(".")[1] for m in modules() if m.count(".") >= 2}
    missing = sorted(n for n in stems | packages if f"`{n}`" not in text and f"`{n}/`" not in text)
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
