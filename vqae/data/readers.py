"""Patch datasets: index -> raw bands -> 20/60 m bands upsampled -> (C, 120, 120) float32 DN.

Only `load_raw` differs between the GeoTIFF and the LMDB reader, so both give identical tensors
for identical stored arrays. With `native=True` (data.resample=device) a sample holds the raw
uint16 bands stacked per native size instead, and `vqae.data.device_input` upsamples whole
batches on the training device. Readers return digital numbers as stored: offset removal and
normalization belong to the model (`vqae.models.normalize`), so a checkpoint carries them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError
from torch.utils.data import Dataset

from vqae.data.bands import S1_BANDS, channels, check_native_shape
from vqae.data.discover import PatchFiles, find_patches
from vqae.data.lmdb_store import LmdbStore
from vqae.data.resample import interpolation_flag, native_stacks, stack_bands
from vqae.data.shards import ShardedStore, open_store
from vqae.errors import DataError


class PatchDataset(Dataset):
    """Base reader. Subclasses implement `load_raw(key, bands) -> {band: native array}`.

    Items: {"image": (C, 120, 120) float32, "name"}, or with `native` {"native": {side:
    (n, side, side) uint16}, "name"} (S2 only: S1's float32 dB bands stay on the CPU path).
    """

    def __init__(self, names: list[str], bands: list[str], interpolation: str = "bicubic",
                 s1_names: dict[str, str] | None = None, native: bool = False):
        self.names = list(names)
        self.s2_bands = list(bands)
        self.s1_names = s1_names  # S2 patch -> its S1 patch; None = S2 only
        self.bands = channels(self.s2_bands, s1_names is not None)
        self.flag = interpolation_flag(interpolation)
        self.native = native
        assert not (native and s1_names), "S1 stays on the CPU path (device_input.resample_mode)"

    def __len__(self) -> int:
        return len(self.names)

    def load_raw(self, key: str, bands: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def read_dn(self, index: int) -> np.ndarray:
        """(C, 120, 120) float32 digital numbers, 20/60 m bands upsampled."""
        name = self.names[index]
        raw = self.load_raw(name, self.s2_bands)
        if self.s1_names is not None:
            s1 = self.s1_names.get(name)
            if s1 is None:
                raise DataError(f"patch {name} has no paired S1 patch (s1_name) in the metadata")
            raw.update(self.load_raw(s1, S1_BANDS))
        return stack_bands(raw, self.bands, self.flag)  # (C, 120, 120)

    def read_native(self, index: int) -> dict[int, np.ndarray]:
        """{native side: (n, side, side) uint16} of the S2 bands, as stored."""
        name = self.names[index]
        stacks = native_stacks(self.load_raw(name, self.s2_bands), self.s2_bands)
        for side, stack in stacks.items():
            if stack.dtype != np.uint16:  # the device path rounds and saturates to uint16
                raise DataError(f"patch {name} stores its {side}x{side} bands as {stack.dtype}; "
                                "data.resample=device needs uint16 S2 bands: use "
                                "--data.resample=cpu")
        return stacks

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        if self.native:
            native = {side: torch.from_numpy(a) for side, a in self.read_native(index).items()}
            return {"native": native, "name": name}
        return {"image": torch.from_numpy(self.read_dn(index)), "name": name}


class GeoTiffDataset(PatchDataset):
    """BigEarthNet GeoTIFF folders (v1 or v2 layout, any depth)."""

    def __init__(self, root: str | Path, names: list[str] | None = None,
                 patches: dict[str, PatchFiles] | None = None, **kwargs):
        from vqae.data.geotiff import load_patch_bands  # rasterio: only where GeoTIFFs are read

        self._load = load_patch_bands
        self.root = Path(root)
        self.patches = patches if patches is not None else find_patches(self.root)
        super().__init__(names if names is not None else list(self.patches), **kwargs)

    def load_raw(self, key: str, bands: list[str]) -> dict[str, np.ndarray]:
        patch = self.patches.get(key)
        if patch is None:
            raise DataError(f"patch {key} not found under {self.root}")
        return self._load(patch, bands)

    def georef(self, key: str, bands: list[str]) -> dict | None:
        """The patch's CRS, 10 m geotransform and nodata (vqae.data.geotiff.patch_georef)."""
        from vqae.data.geotiff import patch_georef

        return patch_georef(self.patches[key], bands)


def lmdb_patch_names(store: LmdbStore | ShardedStore, band: str) -> list[str]:
    """All keys whose safetensors dict holds `band` (S2 keys vs S1 keys, say), sorted."""
    keys = [key for key, bands in store.headers() if band in bands]
    if not keys:
        raise DataError(f"LMDB {store.path} holds no patch with band {band}")
    return sorted(keys)


class LmdbDataset(PatchDataset):
    """rico-hdl LMDB: key = patch name, value = safetensors dict band -> native array.

    Reads through an `LmdbStore` (a data source's, or its own when given a path), whose handle
    is opened once per process, so once per DataLoader worker; the dataset pickles freely.
    """

    def __init__(self, store: LmdbStore | ShardedStore | str | Path,
                 names: list[str] | None = None, **kwargs):
        self.store = store if isinstance(store, (LmdbStore, ShardedStore)) else open_store(store)
        self.path = self.store.path
        bands = kwargs.get("bands") or []
        super().__init__(names if names is not None else lmdb_patch_names(self.store, bands[0]),
                         **kwargs)

    def load_raw(self, key: str, bands: list[str]) -> dict[str, np.ndarray]:
        value = self.store.get(key)
        if value is None:
            raise DataError(
                f"LMDB {self.path} has no key {key!r}; the split/metadata file and the LMDB "
                "disagree, re-encode or pass the matching metadata"
            )
        try:
            arrays = safetensors.numpy.load(value)
        except SafetensorError as err:
            raise self.store.corrupt(err, key) from err
        out = {}
        for band in bands:
            if band not in arrays:
                raise DataError(f"LMDB {self.path} key {key!r} has no band {band} "
                                f"(it holds {sorted(arrays)})")
            check_native_shape(arrays[band], band, key, f"LMDB {self.path}")
            out[band] = arrays[band]
        return out
