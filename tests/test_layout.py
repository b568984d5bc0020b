"""The package's layers point down only (docs/layout.md): every import of every module, at its
top or inside a function, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vqae"
# Rows from the top: a unit imports itself and the rows below it, never a row above or its own
# row's other units. A unit is a package of vqae (`codec`), a top-level module (`cli`), or one
# of the leaves named in LEAVES.
LAYERS = (
    ("__main__",),
    ("cli",),
    ("vqae",),  # vqae/__init__.py: `from vqae import Codec`, lazily
    ("commands",),
    ("rd",),
    ("scene",),
    ("codec",),
    ("training", "sweeps"),
    ("checkpoint",),
    ("models",),
    ("entropy",),
    ("data",),
    ("config",),
    ("data.bands", "io", "metrics", "distributed"),
    ("errors",),
)
LEAVES = ("data.bands",)  # band facts: config's checks need them, and data needs config
TOP_LEVEL = {"__init__", "__main__", "cli", "errors", "metrics", "distributed"}
ROW = {unit: row for row, units in enumerate(LAYERS) for unit in units}
# spawner.py's code runs on login nodes: no torch anywhere in what it imports
TORCH_FREE = ("sweeps", "io", "config", "errors")
# modules on the LMDB path: importing rasterio costs seconds in every worker
NO_RASTERIO = ("data/lmdb_store.py", "data/lmdb_tree.py", "data/lmdb_writer.py",
               "codec/codec.py", "codec/bitstream.py")


def module_name(path: Path) -> str:
    """vqae/models/autoencoder.py -> vqae.models.autoencoder (vqae/models/__init__.py ->
    vqae.models.__init__, so one leading dot names the package itself)."""
    return ".".join(("vqae", *path.relative_to(PACKAGE).with_suffix("").parts))


def imports(path: Path, module: str | None = None) -> set[str]:
    """Every name `path` imports, at its top or inside a function; a relative import resolved
    against `module`, the file's dotted name (module_name(path) by default)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = (module or module_name(path)).split(".")[: -node.level]
                base = ".".join([*parts, *filter(None, [node.module])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def unit_of(name: str) -> str | None:
    """The layer unit of a dotted vqae name (None outside vqae)."""
    parts = name.split(".")
    if parts[0] != "vqae":
        return None
    if len(parts) == 1 or parts[1] == "__init__":
        return "vqae"
    dotted = ".".join(parts[1:3])
    return dotted if dotted in LEAVES else parts[1]


def upward(path: Path) -> list[str]:
    """The vqae names `path` imports from its own row or a row above it."""
    me = unit_of(module_name(path))
    bad = []
    for name in sorted(imports(path)):
        other = unit_of(name)
        if other is None or other == me or other not in ROW:
            continue  # `vqae.codec.Codec` style names resolve through their package
        if ROW[other] <= ROW[me]:
            bad.append(name)
    return bad


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_row():
    units = {unit_of(module_name(p)) for p in sources()}
    assert units - set(ROW) == set(), "add the new package to LAYERS and docs/layout.md"


def test_top_level_holds_only_what_belongs_to_no_package():
    found = {p.stem for p in PACKAGE.glob("*.py")}
    assert found == TOP_LEVEL, "put a new module into the package it belongs to"


def test_layers_point_down():
    bad = {str(p.relative_to(PACKAGE)): upward(p) for p in sources()}
    assert not {k: v for k, v in bad.items() if v}


def module_graph() -> dict[str, set[str]]:
    names = {module_name(p).removesuffix(".__init__"): p for p in sources()}
    graph = {}
    for name, path in names.items():
        targets = set()
        for imported in imports(path):
            while imported and imported not in names:  # vqae.config.Config -> vqae.config
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (as the modules along it), [] when there is none."""
    state, stack = {}, []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_import_cycles():
    # a package's __init__ that imports its own modules is not a cycle with them
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in module_graph().items()}
    assert find_cycle(graph) == []


@pytest.mark.parametrize("package", TORCH_FREE)
def test_launch_code_imports_no_torch(package):
    """Everything a torch-free package imports, transitively through vqae, is torch-free."""
    graph, paths = module_graph(), {module_name(p).removesuffix(".__init__"): p for p in sources()}
    seen, todo = set(), [m for m in graph if unit_of(m) == package]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    heavy = {m: offending(imports(paths[m]), ("torch", "rasterio", "wandb"))
             for m in sorted(seen)}
    assert not {k: v for k, v in heavy.items() if v}


def offending(names: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == b or n.startswith(b + ".") for b in banned))


def test_the_lmdb_path_imports_no_rasterio():
    bad = {m: offending(imports(PACKAGE / m), ("rasterio",)) for m in NO_RASTERIO}
    assert not {k: v for k, v in bad.items() if v}


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check can fail: a function-local import of the codec from models is found, and so
    is one of commands from the codec, relative or not."""
    models, codec = tmp_path / "vqae" / "models", tmp_path / "vqae" / "codec"
    models.mkdir(parents=True)
    codec.mkdir()
    (models / "m.py").write_text("def f():\n    from vqae.codec.codec import Codec\n")
    (codec / "c.py").write_text("def f():\n    from ..commands import compress\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "vqae"
    try:
        assert upward(models / "m.py") == ["vqae.codec.codec", "vqae.codec.codec.Codec"]
        assert upward(codec / "c.py") == ["vqae.commands", "vqae.commands.compress"]
    finally:
        PACKAGE = saved


def test_the_checker_resolves_relative_imports(tmp_path):
    """`from ..codec.codec import Codec` in vqae/models is the same import."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ..codec.codec import Codec\n    from .. import rd\n"
                      "    from . import quantizers\n")
    found = imports(module, "vqae.models.m")
    assert {"vqae.codec.codec.Codec", "vqae.rd", "vqae.models.quantizers"} <= found


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
