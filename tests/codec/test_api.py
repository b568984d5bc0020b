"""`from vqae import Codec`: the library round trip, the same bytes and pixels as the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

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


def test_a_dict_is_upsampled_with_the_checkpoints_interpolation(fake_patches, tmp_path):
    """A model trained on nearest-neighbour upsampled 20/60 m bands gets a dict of native bands
    upsampled as its reader did, not with the default bicubic."""
    ckpt = make_checkpoint(tmp_path / "nearest.pt", fake_patches,
                           overrides=["data.interpolation=nearest"])
    codec = Codec.from_checkpoint(ckpt, device="cpu")
    with DataSource(DataConfig(path=str(fake_patches), interpolation="nearest")) as source:
        ds = source.dataset("all")
        name, want = ds.names[0], ds[0]["image"]  # (12, 120, 120) as training saw it
    patch = read_patch(fake_patches, name)
    np.testing.assert_array_equal(codec.image(patch).numpy(), want.numpy())


@pytest.mark.parametrize("patch, message", [
    (lambda p: {**p, "B02": np.full((120, 120), np.nan, np.float32)}, "band B02 holds 14400 NaN"),
    (lambda p: {**p, "B03": np.full((60, 60), np.inf, np.float32)}, "NaN or infinite"),
    (lambda p: {**p, "B04": np.full((120, 120), -5, np.int32)}, "outside 0..65535"),
    (lambda p: {**p, "B05": np.zeros((60, 60), bool)}, "dtype bool"),
    (lambda p: {**p, "B05": np.zeros((0, 0), np.uint16)}, r"shape \(0, 0\)"),
    (lambda p: {**p, "B05": [[1, 2], [3]]}, "not an array of numbers"),
    (lambda p: np.full((12, 120, 120), 70000.0), "outside 0..65535"),
    (lambda p: "patch.tif", "not str; read files first"),
    (lambda p: None, "not NoneType"),
])
def test_a_patch_that_cannot_round_trip_is_refused(codec, fake_patches, reader, patch, message):
    with pytest.raises(DataError, match=message):
        codec.compress(patch(read_patch(fake_patches, reader.names[0])))


def test_integer_bands_of_any_width_give_the_uint16_file(codec, fake_patches, reader):
    patch = read_patch(fake_patches, reader.names[0])
    as_int64 = {b: a.astype(np.int64) for b, a in patch.items()}
    assert codec.compress(as_int64) == codec.compress(patch)


def test_batches_and_files_are_checked_at_the_boundary(codec, reader):
    data = codec.compress(reader[0]["image"])
    assert codec.compress_batch([]) == [] and codec.decompress_batch([]) == []
    for same in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert codec.decompress(same)["B02"].tobytes() == codec.decompress(data)["B02"].tobytes()
    with pytest.raises(DataError, match="a list of patches"):
        codec.compress_batch(reader[0]["image"])
    with pytest.raises(DataError, match="a list of files"):
        codec.decompress_batch(data)
    with pytest.raises(DataError, match="not its path"):
        codec.decompress("x.vqz")
    for depth in (0, -1, 9):
        with pytest.raises(DataError, match=f"depth {depth} is outside 1..3"):
            codec.decompress(data, depth=depth)
    for depth in (1.5, True, "1"):
        with pytest.raises(DataError, match="not a whole number"):
            codec.decompress(data, depth=depth)
        with pytest.raises(DataError, match="not a whole number"):
            codec.compress(reader[0]["image"], depth=depth)


def test_from_checkpoint_names_a_bad_device(tiny_ckpt):
    with pytest.raises(DataError, match="device 'banana'; valid: auto, cpu, cuda"):
        Codec.from_checkpoint(tiny_ckpt, device="banana")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_data_error_for_the_library(tiny_ckpt):
    with pytest.raises(DataError, match='no CUDA GPU is visible here; pass device="cpu"'):
        Codec.from_checkpoint(tiny_ckpt, device="cuda")
