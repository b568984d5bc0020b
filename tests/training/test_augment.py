"""The contrast augmentation (train.contrast_range): a wider training range from calm scenes."""

from __future__ import annotations

import pytest
import torch

from vqae.config import load_config
from vqae.errors import ConfigError
from vqae.training.augment import stretch_contrast


def test_stretch_contrast_scales_each_patch_about_its_band_means():
    g = torch.Generator().manual_seed(0)
    x = 20000 + torch.randn(64, 3, 16, 16, generator=g) * 100  # no clamping at this contrast
    torch.manual_seed(1)
    y = stretch_contrast(x, 0.5, 12.0)
    ratio = (y.std(dim=(2, 3)) / x.std(dim=(2, 3)))  # (B, C): one factor per patch
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 12.0 + 1e-3
    assert ratio.max() / ratio.min() > 4  # log-uniform over the range, not one value
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.5)
    torch.manual_seed(1)
    assert torch.equal(stretch_contrast(x, 0.5, 12.0), y)  # the CPU RNG: a resume replays it


def test_stretch_contrast_stays_within_uint16():
    x = torch.tensor([0.0, 60000.0]).repeat(2, 1, 8, 4)  # (2, 1, 8, 8) at the range's ends
    y = stretch_contrast(x, 10.0, 10.0)
    assert y.min() == 0 and y.max() == 65535
    assert torch.equal(stretch_contrast(x, 1.0, 1.0), x)


@pytest.mark.parametrize("value, message", [
    ("[12, 0.5]", "low <= high"), ("[1]", "low <= high"), ("[0, 2]", "out of range"),
])
def test_bad_contrast_ranges_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"train.contrast_range={value}"])


def test_patch_scales_need_patch_means_and_contrast_needs_s2_only():
    with pytest.raises(ConfigError, match="model.patch_means=true as well"):
        load_config(overrides=["model.patch_scales=true"])
    with pytest.raises(ConfigError, match="S1 bands"):
        load_config(overrides=["train.contrast_range=[0.5, 12]", "data.s1=true"])
    cfg = load_config(overrides=["model.patch_means=true", "model.patch_scales=true"])
    assert cfg.model.patch_scales


def test_training_sees_the_stretched_contrast(sample_dir, tmp_path):
    """The same seeded first step with and without the stretch: only the inputs differ."""
    from tests.training.test_train import train_args
    from vqae.cli import main
    from vqae.training.tracking import read_jsonl

    losses = {}
    for stretch in ("[1, 1]", "[8, 8]"):
        run = tmp_path / stretch.replace(" ", "")
        assert main(train_args(run, "--train.steps=1", "--run.tracker=none",
                               "--train.eval_every=1000", "--train.augment=false",
                               f"--train.contrast_range={stretch}")) == 0
        losses[stretch] = [r["train/loss"] for r in read_jsonl(run / "metrics.jsonl")
                           if "train/loss" in r][0]
    assert losses["[8, 8]"] != losses["[1, 1]"]
