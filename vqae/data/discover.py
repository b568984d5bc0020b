"""Find BigEarthNet patch folders in a GeoTIFF tree, at any depth.

A patch folder is recognised by its files, `<folder>/<folder>_<BAND>.tif[f]`, so the v1 layout
(`root/<patch>/`), the v2 layout (`root/<tile>/<patch>/`) and deeper trees all work.
"""

from __future__ import annotations

import os
from pathlib import Path

from vqae.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")


_LAYOUTS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}


class PatchFiles:
    """A patch folder and which bands it holds. Compact, as a tree of 549,488 patches keeps
    one each: the folder as one string and the (band, file suffix) pairs as a tuple shared by
    every patch with the same files (~250 bytes a patch, where a dict of 12 Paths took ~4 KB);
    `files` builds the paths when asked."""

    __slots__ = ("_folder", "_layout", "name")

    def __init__(self, name: str, folder: str | Path, files: dict[str, str | Path]):
        self.name, self._folder = name, str(folder)
        layout = tuple(sorted((band, os.path.basename(f)[len(name) + 1 + len(band):])
                              for band, f in files.items()))
        self._layout = _LAYOUTS.setdefault(layout, layout)

    @property
    def folder(self) -> Path:
        return Path(self._folder)

    @property
    def bands(self) -> list[str]:
        return [band for band, _ in self._layout]

    @property
    def files(self) -> dict[str, Path]:
        """Band name -> its GeoTIFF."""
        return {band: Path(self._folder, f"{self.name}_{band}{ext}") for band, ext in self._layout}

    def expected(self, band: str) -> Path:
        """Where a band's file should be, for error messages."""
        return self.folder / f"{self.name}_{band}.tif"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PatchFiles) and (self.name, self._folder, self._layout) == (
            other.name, other._folder, other._layout)

    def __repr__(self) -> str:
        return f"PatchFiles({self.name!r}, {self._folder!r}, bands={self.bands})"


def _band_of(filename: str, patch: str) -> str | None:
    stem, ext = os.path.splitext(filename)
    if ext not in TIFF_SUFFIXES or not stem.startswith(patch + "_"):
        return None
    return stem[len(patch) + 1 :]


def _scan(folder: str, out: dict[str, PatchFiles]) -> None:
    name = os.path.basename(folder)
    files: dict[str, str] = {}
    subdirs = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=True):
                subdirs.append(entry.path)
            elif (band := _band_of(entry.name, name)) is not None:
                files[band] = entry.name
    if files:
        if name in out:
            raise DataError(
                f"patch {name} appears twice: {out[name].folder} and {folder}; "
                "remove one copy or point the data path at one of them"
            )
        out[name] = PatchFiles(name, folder, files)
    for sub in sorted(subdirs):
        _scan(sub, out)


def require_folder(path: str | Path, arg: str, fix: str) -> Path:
    """`path`, given as the command's argument `arg`, when it is a folder; else a one-line
    error naming both and the fix."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"{arg} {path} {what}; {fix}")
    return path


def find_patches(root: str | Path, bands: list[str] | None = None) -> dict[str, PatchFiles]:
    """Patch name -> its files, sorted by name; only folders holding one of `bands` if given."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path {root} does not exist; pass an existing folder, archive or LMDB")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder of GeoTIFF patches")
    found: dict[str, PatchFiles] = {}
    _scan(str(root), found)
    if bands is not None:
        wanted = set(bands)
        found = {k: v for k, v in found.items() if wanted.intersection(v.bands)}
    if not found:
        what = f" with any of the bands {' '.join(bands)}" if bands else ""
        raise DataError(
            f"no patches{what} found under {root}; expected files like "
            f"{root}/<patch>/<patch>_B02.tif (BigEarthNet v1) or {root}/<tile>/<patch>/... (v2)"
        )
    return dict(sorted(found.items()))
