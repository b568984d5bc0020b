"""Patch datasets: index -> load raw bands -> resample -> offset -> normalize -> sample dict.

Only `load_raw` differs between the GeoTIFF and the LMDB reader, so both give identical tensors
for identical stored arrays.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import lmdb
import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError
from torch.utils.data import Dataset

from vqae.data.bands import L2A_OFFSET, S1_BANDS, check_native_shape
from vqae.data.discover import PatchFiles, find_patches
from vqae.data.geotiff import load_patch_bands
from vqae.data.normalize import Normalizer
from vqae.data.resample import interpolation_flag, stack_bands
from vqae.errors import DataError


class PatchDataset(Dataset):
    """Base reader. Subclasses implement `load_raw(key, bands) -> {band: native array}`."""

    def __init__(self, names: list[str], bands: list[str], normalizer: Normalizer | None = None,
                 interpolation: str = "bicubic", subtract_offset: bool = False,
                 s1_names: dict[str, str] | None = None):
        self.names = list(names)
        self.s2_bands = list(bands)
        self.s1_names = s1_names  # S2 patch -> its S1 patch; None = S2 only
        self.bands = self.s2_bands + (S1_BANDS if s1_names is not None else [])
        self.normalizer = normalizer
        self.flag = interpolation_flag(interpolation)
        self.offset = L2A_OFFSET if subtract_offset else 0

    def __len__(self) -> int:
        return len(self.names)

    def load_raw(self, key: str, bands: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def read_dn(self, index: int) -> np.ndarray:
        """(C, 120, 120) float32 digital numbers, 20/60 m bands upsampled, offset removed."""
        name = self.names[index]
        raw = self.load_raw(name, self.s2_bands)
        if self.s1_names is not None:
            s1 = self.s1_names.get(name)
            if s1 is None:
                raise DataError(f"patch {name} has no paired S1 patch (s1_name) in the metadata")
            raw.update(self.load_raw(s1, S1_BANDS))
        x = stack_bands(raw, self.bands, self.flag)  # (C, 120, 120)
        if self.offset:
            x[: len(self.s2_bands)] -= self.offset
        return x

    def __getitem__(self, index: int) -> dict:
        x = self.read_dn(index)
        if self.normalizer is not None:
            x = self.normalizer(x)
        return {"image": torch.from_numpy(x), "name": self.names[index]}


class GeoTiffDataset(PatchDataset):
    """BigEarthNet GeoTIFF folders (v1 or v2 layout, any depth)."""

    def __init__(self, root: str | Path, names: list[str] | None = None,
                 patches: dict[str, PatchFiles] | None = None, **kwargs):
        self.root = Path(root)
        self.patches = patches if patches is not None else find_patches(self.root)
        super().__init__(names if names is not None else list(self.patches), **kwargs)

    def load_raw(self, key: str, bands: list[str]) -> dict[str, np.ndarray]:
        patch = self.patches.get(key)
        if patch is None:
            raise DataError(f"patch {key} not found under {self.root}")
        return load_patch_bands(patch, bands)


def is_lmdb(path: str | Path) -> bool:
    path = Path(path)
    return (path / "data.mdb").is_file() or (path.is_file() and path.suffix == ".mdb")


def safetensors_band_names(value: bytes) -> list[str]:
    """Tensor names from a safetensors header without decoding the arrays."""
    (length,) = struct.unpack("<Q", value[:8])
    header = json.loads(bytes(value[8 : 8 + length]))
    return [k for k in header if k != "__metadata__"]


# Process-wide handle cache: py-lmdb refuses a second open of the same environment in one
# process, so every dataset on one LMDB (train and val, say) must share a handle.
_ENVS: dict[str, tuple[int, lmdb.Environment]] = {}


def open_env(path: str) -> lmdb.Environment:
    """The read-only, lock-free handle of this process, opened on first use."""
    pid = os.getpid()
    cached = _ENVS.get(path)
    if cached is not None and cached[0] == pid:
        return cached[1]
    if cached is not None:
        # Inherited across fork (DataLoader worker): closing it unmaps only this process's copy
        # (lock=False, so no shared reader table is touched) and frees the path for a new open.
        cached[1].close()
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                        subdir=os.path.isdir(path), max_readers=512)
    except lmdb.Error as err:
        raise DataError(f"cannot open LMDB {path}: {err}") from err
    _ENVS[path] = (pid, env)
    return env


class LmdbDataset(PatchDataset):
    """rico-hdl LMDB: key = patch name, value = safetensors dict band -> native array.

    The environment is opened lazily, read-only and without locks, once per process (so once
    per DataLoader worker); the dataset itself holds no handle and pickles freely.
    """

    def __init__(self, path: str | Path, names: list[str] | None = None, **kwargs):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"LMDB path {self.path} does not exist")
        if not is_lmdb(self.path):
            raise DataError(
                f"{self.path} is not an LMDB (no data.mdb inside); encode GeoTIFFs with "
                f"`vqae encode --bigearthnet-s2-root ROOT {self.path}` or pass the right folder"
            )
        bands = kwargs.get("bands") or []
        super().__init__(names if names is not None else self.keys_with_band(bands[0]), **kwargs)

    def env(self) -> lmdb.Environment:
        return open_env(str(self.path))

    def keys_with_band(self, band: str) -> list[str]:
        """All keys whose safetensors dict holds `band` (S2 keys vs S1 keys, say), sorted."""
        with self.env().begin(buffers=True) as txn:
            keys = [bytes(k).decode() for k, v in txn.cursor() if band in safetensors_band_names(v)]
        if not keys:
            raise DataError(f"LMDB {self.path} holds no patch with band {band}")
        return sorted(keys)

    def load_raw(self, key: str, bands: list[str]) -> dict[str, np.ndarray]:
        with self.env().begin() as txn:
            value = txn.get(key.encode())
        if value is None:
            raise DataError(
                f"LMDB {self.path} has no key {key!r}; the split/metadata file and the LMDB "
                "disagree, re-encode or pass the matching metadata"
            )
        try:
            arrays = safetensors.numpy.load(value)
        except SafetensorError as err:
            raise DataError(f"LMDB {self.path} key {key!r} is not a safetensors dict: {err}") from err
        out = {}
        for band in bands:
            if band not in arrays:
                raise DataError(f"LMDB {self.path} key {key!r} has no band {band} "
                                f"(it holds {sorted(arrays)})")
            check_native_shape(arrays[band], band, key, f"LMDB {self.path}")
            out[band] = arrays[band]
        return out
