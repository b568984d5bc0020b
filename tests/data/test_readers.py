import numpy as np
import pytest
import torch

from tests.fakes import write_fake_tree
from tests.lmdb_util import write_lmdb
from vqae.config import S2_BANDS, DataConfig
from vqae.data.discover import find_patches
from vqae.data.normalize import load_normalizer
from vqae.data.readers import GeoTiffDataset, LmdbDataset
from vqae.data.source import open_dataset

TEN = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


@pytest.mark.parametrize("layout, suffix", [("v1", ".tif"), ("v2", ".tiff")])
def test_layouts_found_at_any_depth(tmp_path, layout, suffix):
    written = write_fake_tree(tmp_path / "root", n=3, layout=layout, suffix=suffix)
    patches = find_patches(tmp_path)  # search from above the root too
    assert sorted(patches) == sorted(written)
    assert all(len(p.files) == 12 for p in patches.values())


def test_sample_shape_order_and_exact_10m_values(fake_tree):
    root, written = fake_tree
    ds = open_dataset(DataConfig(path=str(root)), normalize=False)
    x = ds.read_dn(0)
    assert x.shape == (12, 120, 120) and x.dtype == np.float32
    name = ds.names[0]
    for band in ("B02", "B03", "B04", "B08"):  # 10 m bands pass through untouched
        assert np.array_equal(x[S2_BANDS.index(band)], written[name][band])
    item = open_dataset(DataConfig(path=str(root)))[0]
    assert item["name"] == name and item["image"].shape == (12, 120, 120)


def test_band_subset_keeps_order(fake_tree):
    root, written = fake_tree
    ds = open_dataset(DataConfig(path=str(root), bands=TEN), normalize=False)
    x = ds.read_dn(0)
    assert x.shape == (10, 120, 120)
    assert np.array_equal(x[TEN.index("B08")], written[ds.names[0]]["B08"])


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "area"])
def test_interpolation_options(fake_tree, interp):
    root, written = fake_tree
    ds = open_dataset(DataConfig(path=str(root), interpolation=interp), normalize=False)
    x = ds.read_dn(0)
    b05 = written[ds.names[0]]["B05"].astype(np.float32)
    if interp == "nearest":  # each 20 m pixel becomes a 2x2 block
        assert np.array_equal(x[S2_BANDS.index("B05")], np.kron(b05, np.ones((2, 2))))
    # every method keeps the band's mean close to the native mean
    assert abs(x[S2_BANDS.index("B05")].mean() - b05.mean()) < 0.02 * b05.mean()


def test_offset_and_normalization(fake_tree):
    root, _ = fake_tree
    plain = open_dataset(DataConfig(path=str(root)), normalize=False).read_dn(1)
    shifted = open_dataset(DataConfig(path=str(root), subtract_offset=True),
                           normalize=False).read_dn(1)
    np.testing.assert_array_equal(plain - 1000, shifted)
    norm = load_normalizer("", S2_BANDS)
    ds = open_dataset(DataConfig(path=str(root)))
    x = ds[1]["image"]
    np.testing.assert_allclose(norm.denormalize(x[None])[0].numpy(), plain, rtol=1e-5, atol=0.05)


def test_geotiff_and_lmdb_give_identical_tensors(fake_tree, tmp_path):
    root, written = fake_tree
    db = write_lmdb(tmp_path / "db", written)
    geo = open_dataset(DataConfig(path=str(root)))
    lm = open_dataset(DataConfig(path=str(db)))
    assert geo.names == lm.names
    for i in range(len(geo)):
        assert torch.equal(geo[i]["image"], lm[i]["image"])


def test_lmdb_reader_in_dataloader_workers(fake_tree, tmp_path):
    _, written = fake_tree
    ds = open_dataset(DataConfig(path=str(write_lmdb(tmp_path / "db", written))))
    ds[0]  # the parent opens the environment before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    names = [n for batch in loader for n in batch["name"]]
    assert sorted(names) == sorted(written)


def test_real_v2_tiffs_equal_reference_lmdb(shared_data):
    base = shared_data / "rico-hdl"
    lm = LmdbDataset(base / "BigEarthNet_LMDB", bands=S2_BANDS)
    geo = GeoTiffDataset(base / "BigEarthNet" / "BigEarthNet-S2", names=lm.names, bands=S2_BANDS)
    assert len(lm) == 1
    assert np.array_equal(geo.read_dn(0), lm.read_dn(0))
    assert 0 < lm.read_dn(0).mean() < 10000


def test_real_sample_loads(sample_dir):
    ds = open_dataset(DataConfig(), normalize=False)
    assert len(ds) == 24
    for i in range(len(ds)):
        x = ds.read_dn(i)
        assert x.shape == (12, 120, 120) and not np.isnan(x).any()
        assert 0 <= x.min() and x.max() < 20000  # L2A DN: reflectance * 10000, clouds above
        assert 50 < np.median(x) < 6000
    s1 = open_dataset(DataConfig(s1=True), "train")
    x = s1[0]["image"]
    assert x.shape == (14, 120, 120) and torch.isfinite(x).all()
