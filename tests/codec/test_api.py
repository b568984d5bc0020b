"""`from vqae import Codec`: the library round trip, the same bytes and pixels as the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from tests.codec.conftest import make_checkpoint
from vqae import Codec
from vqae.cli import main
from vqae.config import DataConfig
from vqae.data.bands import NATIVE_SIZE
from vqae.data.source import DataSource, read_patch
from vqae.errors import DataError


@pytest.fixture(scope="module")
def codec(tiny_ckpt) -> Codec:
    return Codec.from_checkpoint(tiny_ckpt, device="cpu")


@pytest.fixture(scope="module")
def reader(fake_patches):
    with DataSource(DataConfig(path=str(fake_patches))) as source:
        yield source.dataset("all")


def test_a_dict_of_native_bands_and_the_readers_array_give_the_same_file(codec, reader,
                                                                         fake_patches):
    from_dict = codec.compress(read_patch(fake_patches, reader.names[0]))
    from_array = codec.compress(reader[0]["image"])  # (12, 120, 120) digital numbers
    assert from_dict == from_array and from_dict[:4] == b"\x89VQZ"


def test_the_library_writes_the_bytes_and_pixels_of_the_cli(codec, tiny_ckpt, fake_patches,
                                                            reader, tmp_path):
    """One batch of one patch: `vqae compress --batch-size 1` fits the same band filter."""
    out, back = tmp_path / "vqz", tmp_path / "dn"
    assert main(["compress", str(tiny_ckpt), str(fake_patches), "-o", str(out),
                 "--batch-size", "1", "--no-progress"]) == 0
    assert main(["decompress", str(out), "-o", str(back), "--no-progress"]) == 0
    for i, name in enumerate(reader.names[:3]):
        data = codec.compress(reader[i]["image"])
        assert data == (out / f"{name}.vqz").read_bytes()
        bands = codec.decompress(data)
        assert set(bands) == set(codec.bands)
        for band, array in bands.items():
            with rasterio.open(back / name / f"{name}_{band}.tif") as src:
                np.testing.assert_array_equal(array, src.read(1))
            assert array.dtype == np.uint16 and array.shape == (120, 120)


def test_batches_equal_single_calls_and_depth_and_native_work(codec, reader):
    patches = [reader[i]["image"] for i in range(4)]
    files = codec.compress_batch(patches, band_filter="none")
    assert files == [codec.compress(p, band_filter="none") for p in patches]
    shallow = codec.compress(patches[0], depth=1, band_filter="none")
    assert len(shallow) < len(files[0])
    cut = codec.decompress(files[0], depth=1)
    for band, array in codec.decompress(shallow).items():
        np.testing.assert_array_equal(array, cut[band])  # a prefix decodes like a shallow file
    native = codec.decompress_batch(files[:2], native=True)
    assert all(a.shape == (NATIVE_SIZE[b],) * 2 for d in native for b, a in d.items())


def test_bad_input_is_a_one_line_error_naming_the_problem(codec, reader, fake_patches):
    patch = read_patch(fake_patches, reader.names[0])
    with pytest.raises(DataError, match="no band B03"):
        codec.compress({b: a for b, a in patch.items() if b != "B03"})
    with pytest.raises(DataError, match=r"shape \(12, 64, 64\)"):
        codec.compress(np.zeros((12, 64, 64), np.float32))
    with pytest.raises(DataError, match="band B02 has shape"):
        codec.compress({**patch, "B02": np.zeros((7, 9), np.uint16)})
    with pytest.raises(DataError, match="depth 9 is outside 1..3"):
        codec.compress(reader[0]["image"], depth=9)
    with pytest.raises(DataError, match="band filter 'sharpen'"):
        codec.compress(reader[0]["image"], band_filter="sharpen")
    with pytest.raises(DataError, match="the data is not a .vqz file"):
        codec.decompress(b"not a vqz file at all")
    with pytest.raises(DataError, match="upload.vqz"):
        codec.decompress(codec.compress(reader[0]["image"])[:-3], source="upload.vqz")


def test_an_unfitted_prior_is_refused_in_one_line(fake_patches, tmp_path):
    raw = make_checkpoint(tmp_path / "raw.pt", fake_patches, fit=False)
    with pytest.raises(DataError, match="no fitted prior; run `vqae fit-prior") as info:
        Codec.from_checkpoint(raw, device="cpu")
    assert "\n" not in str(info.value)
