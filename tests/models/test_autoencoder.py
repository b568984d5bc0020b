"""Autoencoder: shapes for every factor, build_model from config, summary, overfitting a real patch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.models.real_patch import real_patch
from vqae.config import Config
from vqae.errors import ConfigError
from vqae.models import Autoencoder, build_model


def tiny_config(**quantizer) -> Config:
    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, widths=[8, 16], blocks_per_stage=1, latent_dim=8,
                                    groups=4)
    cfg.quantizer = dataclasses.replace(cfg.quantizer, **{"codebook_size": 32, "levels": 2, **quantizer})
    return cfg


CASES = [("vq", 2, 60), ("vq", 4, 30), ("vq", 8, 15), ("vq", 16, 8), ("rvq", 16, 8), ("fsq", 8, 15)]


@pytest.mark.parametrize("name, factor, side", CASES)
def test_shapes_for_every_factor(name, factor, side):
    torch.manual_seed(0)
    cfg = tiny_config(name=name)
    cfg.model.downsample = factor
    model = build_model(cfg)
    x = torch.randn(1, 12, 120, 120)
    out = model(x)
    levels = 2 if name == "rvq" else 1
    assert out.recon.shape == x.shape
    assert out.indices.shape == (1, levels, side, side) and out.indices.dtype == torch.long
    assert out.perplexity.shape == (levels,)
    assert all(v.ndim == 0 for v in out.losses.values())
    assert model.latent_shape() == (levels, side, side)
    model.eval()
    indices = model.encode(x)
    assert torch.equal(model.decode(indices), model(x).recon)


def test_in_bands_follow_data_bands_and_s1():
    cfg = tiny_config()
    cfg.data.bands = ["B02", "B03", "B04"]
    cfg.data.s1 = True
    cfg.model.in_bands = 99  # overridden by the data section
    model = build_model(cfg)
    assert model(torch.randn(1, 5, 120, 120)).recon.shape == (1, 5, 120, 120)


def test_rvq_n_q_is_passed_through():
    model = build_model(tiny_config(name="rvq")).eval()
    x = torch.randn(1, 12, 120, 120)
    assert model(x, n_q=1).indices.shape[1] == 1
    assert model.encode(x, n_q=1).shape == (1, 1, 15, 15)


def test_summary_has_parameter_count_and_latent_shape():
    model = build_model(tiny_config(name="rvq"))
    text = model.summary()
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in text
    assert "2 level(s) x 15 x 15" in text and "K=32" in text


@pytest.mark.parametrize("section, key, value, valid", [
    ("quantizer", "name", "lfq", "vq, rvq, fsq"),
    ("model", "downsample", 3, "2, 4, 8, 16"),
    ("model", "activation", "tanh", "silu, gelu, relu"),
])
def test_config_errors_name_valid_values(section, key, value, valid):
    cfg = tiny_config()
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError, match=valid):
        build_model(cfg)


def test_no_batchnorm_anywhere():
    model = build_model(Config())
    assert isinstance(model, Autoencoder)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.slow
def test_tiny_autoencoder_overfits_one_real_patch():
    x = real_patch()[None]  # (1, 12, 120, 120)
    torch.manual_seed(0)
    cfg = tiny_config(codebook_size=64)
    cfg.model = dataclasses.replace(cfg.model, widths=[8], downsample=2)  # ~80 steps to 10x
    model = build_model(cfg)
    optim = torch.optim.Adam(model.parameters(), lr=6e-3)
    first = last = None
    for _ in range(250):
        out = model(x)
        loss = F.mse_loss(out.recon, x) + sum(out.losses.values())
        optim.zero_grad()
        loss.backward()
        optim.step()
        first = loss.item() if first is None else first
        last = loss.item()
        if last < first / 10:
            break
    assert last < first / 10, (first, last)
