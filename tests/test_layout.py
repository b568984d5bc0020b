"""The package's layers point down only (docs/layout.md): every import of every module, at its
top or inside a function, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vqae"
# package -> the vqae packages it must never import
FORBIDDEN = {
    "models": ("vqae.codec", "vqae.rd", "vqae.commands", "vqae.training.trainer", "vqae.training.evaluate"),
    "data": ("vqae.codec", "vqae.rd", "vqae.commands", "vqae.models", "vqae.entropy"),
    "entropy": ("vqae.codec", "vqae.rd", "vqae.commands", "vqae.models"),
    "codec": ("vqae.rd", "vqae.commands", "vqae.training.trainer", "vqae.training.evaluate"),
    "rd": ("vqae.commands",),
}
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


def offending(names: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == b or n.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_down(package):
    bad = {str(p.relative_to(PACKAGE)): offending(imports(p), FORBIDDEN[package])
           for p in sorted((PACKAGE / package).rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


def test_the_lmdb_path_imports_no_rasterio():
    bad = {m: offending(imports(PACKAGE / m), ("rasterio",)) for m in NO_RASTERIO}
    assert not {k: v for k, v in bad.items() if v}


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The check can fail: a function-local import of the codec is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from vqae.codec.codec import Codec\n    return Codec\n")
    assert offending(imports(module), FORBIDDEN["models"]) == ["vqae.codec.codec",
                                                             "vqae.codec.codec.Codec"]


def test_the_checker_resolves_relative_imports(tmp_path):
    """`from ..codec.codec import Codec` in vqae/models is the same forbidden import."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ..codec.codec import Codec\n    from .. import rd\n"
                      "    from . import quantizers\n")
    assert offending(imports(module, "vqae.models.m"), FORBIDDEN["models"]) == [
        "vqae.codec.codec", "vqae.codec.codec.Codec", "vqae.rd"]
    assert "vqae.models.quantizers" in imports(module, "vqae.models.m")
