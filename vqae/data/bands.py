"""Band names and native sizes of the sensors vqae reads (see DESIGN.md, data facts)."""

from __future__ import annotations

import numpy as np

from vqae.errors import ConfigError, DataError

# The S2 band order used everywhere (BigEarthNet has no B10).
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
PATCH_SIZE = 120  # pixels of the 10 m grid of a 1200 m BigEarthNet patch
S1_BANDS = ["VV", "VH"]
HYSPECNET_BANDS = [f"B{i}" for i in range(1, 225)]  # EnMAP L2A, 224 bands at 128x128
HYSPECNET_SIZE = 128

# Native pixels per side in a 1200 m patch: 10 m -> 120, 20 m -> 60, 60 m -> 20.
NATIVE_SIZE = {
    **{b: 120 for b in ("B02", "B03", "B04", "B08")},
    **{b: 60 for b in ("B05", "B06", "B07", "B8A", "B11", "B12")},
    **{b: 20 for b in ("B01", "B09")},
    **{b: 120 for b in S1_BANDS},
}
# Stored dtypes (rico-hdl keeps them as they are): S2 digital numbers, S1 dB, EnMAP L2A.
S2_DTYPE, S1_DTYPE, HYSPECNET_DTYPE = "uint16", "float32", "int16"
L2A_OFFSET = 1000  # added to L2A digital numbers from processing baseline 04.00 (2022) on


def check_bands(bands: list[str]) -> list[str]:
    """Validate an S2 band subset; order is kept as given."""
    unknown = [b for b in bands if b not in S2_BANDS]
    if unknown:
        raise ConfigError(f"unknown S2 band(s) {unknown}; valid bands: {' '.join(S2_BANDS)}")
    if len(set(bands)) != len(bands):
        raise ConfigError(f"data.bands lists a band twice: {bands}")
    if not bands:
        raise ConfigError("data.bands is empty; name at least one S2 band")
    return list(bands)


def is_s1(band: str) -> bool:
    return band in S1_BANDS


def check_native_shape(array, band: str, patch: str, source: object) -> None:
    """A band must have its native BigEarthNet size; `source` names the file or LMDB."""
    size = NATIVE_SIZE.get(band)
    if size is not None and array.shape != (size, size):
        raise DataError(
            f"patch {patch} band {band} has shape {tuple(array.shape)} in {source}, expected "
            f"({size}, {size}) for a 1200 m BigEarthNet patch"
        )


def band_offsets(bands: list[str], subtract_offset: bool) -> list[float]:
    """Per-band offset the model removes before normalizing: the L2A offset on S2 bands."""
    return [float(L2A_OFFSET) if subtract_offset and b in S2_BANDS else 0.0 for b in bands]


UINT16_MAX = 65535  # S2 bands are stored as uint16 digital numbers
PATCH_MEAN_BITS = 16  # a per-patch band mean (model.patch_means) is a uint16 digital number


def to_uint16(x: np.ndarray) -> np.ndarray:
    """Digital numbers as stored: rounded half to even, saturated to [0, 65535] (as OpenCV's
    cast back to uint16 does)."""
    return np.clip(np.rint(x), 0, UINT16_MAX).astype(np.uint16)


def channels(bands: list[str], s1: bool) -> list[str]:
    """A sample's channels, the model's bands: the S2 `bands`, then VV, VH with S1."""
    return list(bands) + (S1_BANDS if s1 else [])
