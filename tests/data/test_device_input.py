"""Device resampling (data.resample=device) against the OpenCV CPU path, and the prefetcher.

Tolerance, measured on the 24 real sample patches (every band, 24 x 12 x 120 x 120 values):
nearest and area agree exactly; bilinear and bicubic differ by at most 1 DN, on 0.47% (bilinear,
60 m bands) and 0.08% (bicubic) of the pixels of the worst band, border and interior alike. That
is rounding, not the kernel: both compute in float32 (OpenCV horizontal then vertical, torch its
own order) and round half to even, so a value within float32 error of an .5 tie may round either
way. The assertions below allow exactly that: |diff| <= 1 DN on under 1% of a band's pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from tests.lmdb_util import write_lmdb
from vqae.config import DataConfig
from vqae.data.bands import S2_BANDS
from vqae.data.device_input import TORCH_MODES, DeviceInput, Prefetcher, resample_mode, upsample
from vqae.data.resample import INTERPOLATION, native_groups
from vqae.data.source import DataSource
from vqae.errors import ConfigError, DataError

ROUNDING_TIES = {"nearest": 0, "area": 0, "bilinear": 1, "bicubic": 1}  # max |diff| in DN


def both_paths(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(CPU path images, device path images computed on CPU tensors) of every patch."""
    with DataSource(cfg) as source:
        cpu, native = source.dataset("all"), source.dataset("all", native=True)
        ref = torch.stack([cpu[i]["image"] for i in range(len(cpu))])  # (N, C, 120, 120)
        batch = default_collate([native[i] for i in range(len(native))])
    return ref, DeviceInput("cpu", cfg.bands, cfg.interpolation, native=True)(batch)


@pytest.mark.parametrize("interp", list(INTERPOLATION))
def test_device_resampling_matches_opencv_on_real_patches(sample_dir, interp):
    ref, got = both_paths(DataConfig(interpolation=interp))
    assert got.dtype == torch.float32 and got.shape == ref.shape == (24, 12, 120, 120)
    diff = (got - ref).abs()  # (N, C, H, W)
    worst = dict(zip(S2_BANDS, diff.amax(dim=(0, 2, 3)).tolist()))
    share = dict(zip(S2_BANDS, (diff > 0).double().mean(dim=(0, 2, 3)).tolist()))
    for band in ("B02", "B03", "B04", "B08"):  # 10 m bands are only converted
        assert worst[band] == 0, band
    assert max(worst.values()) <= ROUNDING_TIES[interp], worst
    assert max(share.values()) < 0.01, share


def test_band_subset_and_order_survive_device_resampling(sample_dir):
    bands = ["B12", "B08", "B01", "B05", "B02"]  # sizes interleaved, not in S2 order
    ref, got = both_paths(DataConfig(bands=bands, interpolation="nearest"))
    assert torch.equal(got, ref)


def test_saturation_at_hard_edges_matches_opencv():
    """Bicubic overshoots at a 0 | 65535 edge; both paths saturate to the uint16 range."""
    edge = np.zeros((60, 60), dtype=np.uint16)
    edge[:, 30:] = 65535
    edge[20:25] = 0
    want = cv2.resize(edge, (120, 120), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    native = {60: torch.from_numpy(edge)[None, None]}  # (B=1, n=1, 60, 60)
    got = upsample(native, {60: [0]}, "bicubic")[0, 0].numpy()
    assert got.min() == 0 and got.max() == 65535
    assert np.abs(got - want).max() <= 1


def test_every_interpolation_has_a_torch_equivalent():
    assert set(TORCH_MODES) == set(INTERPOLATION)


def test_resample_mode_auto_cpu_device_and_s1():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resample_mode(DataConfig(), cpu) == "cpu"
    assert resample_mode(DataConfig(), cuda) == "device"
    assert resample_mode(DataConfig(resample="device"), cpu) == "device"
    assert resample_mode(DataConfig(resample="cpu"), cuda) == "cpu"
    assert resample_mode(DataConfig(s1=True), cuda) == "cpu"  # S1 stays on the CPU path
    with pytest.raises(ConfigError, match="data.resample=cpu"):
        resample_mode(DataConfig(s1=True, resample="device"), cpu)


def test_loader_workers_collate_native_uint16_stacks(sample_dir):
    with DataSource(DataConfig()) as source:
        ds = source.dataset("all", native=True)
        batch = next(iter(DataLoader(ds, batch_size=3, num_workers=1)))
    assert set(batch) == {"native", "name"} and len(batch["name"]) == 3
    assert {s: tuple(t.shape) for s, t in batch["native"].items()} == {
        120: (3, 4, 120, 120), 60: (3, 6, 60, 60), 20: (3, 2, 20, 20)}
    assert all(t.dtype == torch.uint16 for t in batch["native"].values())
    assert native_groups(S2_BANDS) == {20: [0, 9], 120: [1, 2, 3, 7], 60: [4, 5, 6, 8, 10, 11]}


def test_non_uint16_bands_name_the_cpu_path(fake_tree, tmp_path):
    _, written = fake_tree
    signed = {name: {b: a.astype(np.int16) for b, a in bands.items()}
              for name, bands in written.items()}
    cfg = DataConfig(path=str(write_lmdb(tmp_path / "int16.lmdb", signed)))
    with DataSource(cfg) as source, pytest.raises(DataError, match="data.resample=cpu"):
        source.dataset(native=True)[0]


@pytest.mark.parametrize("native", [False, True])
def test_prefetcher_on_cpu_yields_prepared_batches_in_order(fake_tree, native):
    root, _ = fake_tree
    cfg = DataConfig(path=str(root))
    with DataSource(cfg) as source:
        ds = source.dataset(native=native)
        loader = DataLoader(ds, batch_size=3)
        batches = list(Prefetcher(loader, DeviceInput("cpu", cfg.bands, native=native)))
        plain = [b["image"] for b in DataLoader(source.dataset(), batch_size=3)]
    assert [b["name"] for b in batches] == [ds.names[:3], ds.names[3:]]
    assert all(set(b) == {"image", "name"} for b in batches)
    for got, want in zip(batches, plain):
        assert (got["image"] - want).abs().max() <= 1  # the same images as the CPU path


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_prefetch_and_resampling_match_the_cpu(sample_dir):
    cfg = DataConfig()
    with DataSource(cfg) as source:
        ds = source.dataset("all", native=True)
        loader = DataLoader(ds, batch_size=8, pin_memory=True)
        inputs = DeviceInput("cuda", cfg.bands, cfg.interpolation, native=True)
        on_cpu = DeviceInput("cpu", cfg.bands, cfg.interpolation, native=True)
        for batch, got in zip(loader, Prefetcher(loader, inputs)):
            assert got["image"].is_cuda and got["name"] == batch["name"]
            assert (got["image"].cpu() - on_cpu(batch)).abs().max() <= 1
