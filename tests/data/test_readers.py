import numpy as np
import pytest
import torch

from tests.fakes import write_fake_tree
from tests.lmdb_util import write_lmdb
from vqae.config import DataConfig
from vqae.data.bands import S2_BANDS
from vqae.data.discover import find_patches
from vqae.data.lmdb_store import LmdbStore
from vqae.data.readers import GeoTiffDataset, LmdbDataset
from vqae.data.source import DataSource

TEN = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


@pytest.mark.parametrize("layout, suffix", [("v1", ".tif"), ("v2", ".tiff")])
def test_layouts_found_at_any_depth(tmp_path, layout, suffix):
    written = write_fake_tree(tmp_path / "root", n=3, layout=layout, suffix=suffix)
    patches = find_patches(tmp_path)  # search from above the root too
    assert sorted(patches) == sorted(written)
    assert all(len(p.files) == 12 for p in patches.values())


def test_sample_shape_order_and_exact_10m_values(fake_tree):
    root, written = fake_tree
    ds = DataSource(DataConfig(path=str(root))).dataset()
    x = ds.read_dn(0)
    assert x.shape == (12, 120, 120) and x.dtype == np.float32
    name = ds.names[0]
    for band in ("B02", "B03", "B04", "B08"):  # 10 m bands pass through untouched
        assert np.array_equal(x[S2_BANDS.index(band)], written[name][band])
    item = DataSource(DataConfig(path=str(root))).dataset()[0]
    assert item["name"] == name and item["image"].shape == (12, 120, 120)


def test_band_subset_keeps_order(fake_tree):
    root, written = fake_tree
    ds = DataSource(DataConfig(path=str(root), bands=TEN)).dataset()
    x = ds.read_dn(0)
    assert x.shape == (10, 120, 120)
    assert np.array_equal(x[TEN.index("B08")], written[ds.names[0]]["B08"])


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "area"])
def test_interpolation_options(fake_tree, interp):
    root, written = fake_tree
    ds = DataSource(DataConfig(path=str(root), interpolation=interp)).dataset()
    x = ds.read_dn(0)
    b05 = written[ds.names[0]]["B05"].astype(np.float32)
    if interp == "nearest":  # each 20 m pixel becomes a 2x2 block
        assert np.array_equal(x[S2_BANDS.index("B05")], np.kron(b05, np.ones((2, 2))))
    # every method keeps the band's mean close to the native mean
    assert abs(x[S2_BANDS.index("B05")].mean() - b05.mean()) < 0.02 * b05.mean()


def test_readers_return_digital_numbers_as_stored(fake_tree):
    root, written = fake_tree
    plain = DataSource(DataConfig(path=str(root))).dataset()
    shifted = DataSource(DataConfig(path=str(root), subtract_offset=True)).dataset()
    # offset removal and normalization belong to the model; the reader keeps stored values
    np.testing.assert_array_equal(plain.read_dn(1), shifted.read_dn(1))
    x = plain[1]["image"]
    assert np.array_equal(x[S2_BANDS.index("B02")].numpy(), written[plain.names[1]]["B02"])


def test_geotiff_and_lmdb_give_identical_tensors(fake_tree, tmp_path):
    root, written = fake_tree
    db = write_lmdb(tmp_path / "db", written)
    geo = DataSource(DataConfig(path=str(root))).dataset()
    lm = DataSource(DataConfig(path=str(db))).dataset()
    assert geo.names == lm.names
    for i in range(len(geo)):
        assert torch.equal(geo[i]["image"], lm[i]["image"])


def test_sources_on_one_lmdb_share_a_handle_and_survive_a_rename(fake_tree, tmp_path):
    """py-lmdb refuses a second open of one database in a process, even after a rename (the
    README's first run failed so on a cold cache); sources share a counted handle instead."""
    _, written = fake_tree
    first = tmp_path / "staging"
    write_lmdb(first, written)
    a = DataSource(DataConfig(path=str(first)))
    b = DataSource(DataConfig(path=str(first)))
    assert a.dataset()[0]["name"] == b.dataset()[0]["name"]
    a.close()
    assert len(b.dataset()[1]["image"]) == 12  # b's handle is still open
    b.close()
    held = LmdbStore(first)
    held.env()
    first.rename(tmp_path / "final")  # like the sample download: check, then rename
    with DataSource(DataConfig(path=str(tmp_path / "final"))) as moved:
        assert moved.dataset().names == sorted(written)
    held.close()


def test_data_source_scans_once_and_fixes_names_per_split(fake_tree):
    root, written = fake_tree
    with DataSource(DataConfig(path=str(root), split_ratios=[1, 1, 0])) as source:
        train, val = source.dataset("train"), source.dataset("val")
        assert sorted(train.names + val.names) == sorted(written) and len(source.names) == 4
        assert source.dataset("all").names == sorted(written)
        assert "by name hash" in source.describe("train")
        assert source.describe("all").startswith("all 4 patches")


def test_lmdb_reader_in_dataloader_workers(fake_tree, tmp_path):
    _, written = fake_tree
    ds = DataSource(DataConfig(path=str(write_lmdb(tmp_path / "db", written)))).dataset()
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
    ds = DataSource(DataConfig()).dataset()
    assert len(ds) == 24
    for i in range(len(ds)):
        x = ds.read_dn(i)
        assert x.shape == (12, 120, 120) and not np.isnan(x).any()
        assert 0 <= x.min() and x.max() < 20000  # L2A DN: reflectance * 10000, clouds above
        assert 50 < np.median(x) < 6000
    s1 = DataSource(DataConfig(s1=True)).dataset("train")
    x = s1[0]["image"]
    assert x.shape == (14, 120, 120) and torch.isfinite(x).all()
