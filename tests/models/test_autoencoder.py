"""Autoencoder: shapes for every factor, build_model from config, normalization inside the model,
summary, overfitting a real patch."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.models.real_patch import real_patch
from vqae.config import Config
from vqae.data.stats import BIGEARTHNET_S2_STATS
from vqae.models import Autoencoder, build_model


def tiny_config(**quantizer) -> Config:
    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, widths=[8, 16], blocks_per_stage=1, latent_dim=8,
                                    groups=4)
    depth = 2 if quantizer.get("name") == "rvq" else 1
    cfg.quantizer = dataclasses.replace(cfg.quantizer, **{"codebook_size": 32, "depth": depth,
                                                          **quantizer})
    return cfg


def dn(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random digital numbers around typical S2 reflectances."""
    return 200 + 3000 * torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


CASES = [("vq", 2, 60), ("vq", 4, 30), ("vq", 8, 15), ("vq", 16, 8), ("rvq", 16, 8), ("fsq", 8, 15)]


@pytest.mark.parametrize("name, factor, side", CASES)
def test_shapes_for_every_factor(name, factor, side):
    torch.manual_seed(0)
    cfg = tiny_config(name=name)
    cfg.model.downsample = factor
    model = build_model(cfg)
    x = dn(1, 12, 120, 120)
    out = model(x)
    depth = 2 if name == "rvq" else 1
    assert out.recon.shape == x.shape and out.target.shape == x.shape
    assert out.indices.shape == (1, depth, side, side) and out.indices.dtype == torch.long
    assert out.counts.shape == (depth, model.quantizer.codebook_size)
    assert all(v.ndim == 0 for v in out.losses.values())
    assert model.latent_shape() == (depth, side, side)
    model.eval()
    indices = model.encode(x)
    assert torch.equal(model.decode(indices), model.to_dn(model(x).recon))


def test_model_channels_follow_data_bands_and_s1():
    cfg = tiny_config()
    cfg.data.bands = ["B02", "B03", "B04"]
    cfg.data.s1 = True
    model = build_model(cfg)
    assert model.bands == ["B02", "B03", "B04", "VV", "VH"]
    assert model(dn(1, 5, 120, 120)).recon.shape == (1, 5, 120, 120)


def test_normalization_lives_in_the_model_and_its_state_dict():
    cfg = tiny_config()
    cfg.data.bands = ["B02", "B08"]
    cfg.data.subtract_offset = True
    model = build_model(cfg, mean=[400.0, 2000.0], std=[500.0, 1000.0])
    x = torch.tensor([1400.0, 3000.0]).view(1, 2, 1, 1).expand(1, 2, 120, 120)
    target = model(x).target  # (x - 1000 offset - mean) / std
    assert torch.allclose(target[0, :, 0, 0], torch.tensor([0.0, 0.0]))
    assert torch.allclose(model.to_dn(target), x)  # offset added back: DN as stored
    state = model.state_dict()
    assert {"normalize.mean", "normalize.std", "normalize.offset"} <= state.keys()
    fresh = build_model(cfg)  # built-in BigEarthNet stats until the checkpoint's are loaded
    assert fresh.normalize.mean.flatten()[0] == pytest.approx(BIGEARTHNET_S2_STATS["B02"][0])
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x).target, target)


def test_rvq_depth_is_passed_through():
    model = build_model(tiny_config(name="rvq")).eval()
    x = dn(1, 12, 120, 120)
    assert model(x, depth=1).indices.shape[1] == 1
    assert model.encode(x, depth=1).shape == (1, 1, 15, 15)
    with pytest.raises(ValueError, match="depth 3 is outside 1..2"):
        model(x, depth=3)


def test_summary_has_parameter_count_and_latent_shape():
    model = build_model(tiny_config(name="rvq"))
    text = model.summary()
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in text
    assert "depth 2 x 15 x 15" in text and "K=32" in text
    assert model.bpp_index() == pytest.approx(2 * 15 * 15 * 5 / 14400)


def test_no_batchnorm_anywhere():
    model = build_model(Config())
    assert isinstance(model, Autoencoder)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.slow
def test_tiny_autoencoder_overfits_one_real_patch():
    x = real_patch()[None]  # (1, 12, 120, 120) digital numbers
    torch.manual_seed(0)
    cfg = tiny_config(codebook_size=64)
    cfg.model = dataclasses.replace(cfg.model, widths=[8], downsample=2)  # ~80 steps to 10x
    model = build_model(cfg)
    optim = torch.optim.Adam(model.parameters(), lr=6e-3)
    first = last = None
    for _ in range(250):
        out = model(x)
        loss = F.mse_loss(out.recon, out.target) + sum(out.losses.values())
        optim.zero_grad()
        loss.backward()
        optim.step()
        first = loss.item() if first is None else first
        last = loss.item()
        if last < first / 10:
            break
    assert last < first / 10, (first, last)


@pytest.mark.slow
def test_compiled_networks_train_like_eager_and_keep_their_state_keys():
    torch.manual_seed(0)
    eager = build_model(tiny_config(name="rvq", dropout=True))
    compiled = copy.deepcopy(eager)
    compiled.compile_networks(backend="aot_eager")  # quick to build; training uses inductor
    x = dn(2, 12, 120, 120)
    grads = []
    for model in (eager, compiled):
        torch.manual_seed(1)  # the same dropout draws
        out = model(x)
        (F.mse_loss(out.recon, out.target) + sum(out.losses.values())).backward()
        grads.append([p.grad for p in model.parameters()])
        if model is eager:
            expected = out
    assert torch.equal(out.indices, expected.indices)
    assert torch.allclose(out.recon, expected.recon, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
    state = compiled.state_dict()
    assert state.keys() == eager.state_dict().keys()  # no `_orig_mod.` anywhere
    build_model(tiny_config(name="rvq", dropout=True)).load_state_dict(state)


def per_patch_model() -> Autoencoder:
    cfg = tiny_config(name="rvq")
    cfg.model.patch_means = True
    torch.manual_seed(0)
    model = build_model(cfg)
    model(dn(4, 12, 120, 120, seed=3))  # k-means initialisation in training mode
    return model.eval()


def test_per_patch_model_is_blind_to_a_constant_brightness_offset():
    """model.patch_means: each patch is centred on its own integer band means (side
    information), so adding a whole number of DN to every pixel of a band (another source's
    offset, e.g. +1000) leaves the indices unchanged and shifts the decoded image by it."""
    model = per_patch_model()
    x = dn(2, 12, 120, 120, seed=1).round()
    shift = torch.arange(12, dtype=torch.float32).view(1, 12, 1, 1) * 100 + 1000
    indices, patch_means = model.encode(x), model.patch_means(x)
    assert patch_means.shape == (2, 12) and torch.equal(patch_means, patch_means.round())
    assert torch.allclose(patch_means, x.mean(dim=(2, 3)), atol=0.5)
    assert torch.equal(model.encode(x + shift), indices)
    assert torch.equal(model.patch_means(x + shift), patch_means + shift.view(1, 12))
    decoded = model.decode(indices, patch_means)
    assert torch.allclose(model.decode(indices, patch_means + shift.view(1, 12)), decoded + shift,
                          atol=1e-3)
    out = model(x)
    assert torch.equal(decoded, model.to_dn(out.recon, out.patch_means))
    assert out.target.mean(dim=(2, 3)).abs().max() < 1e-3  # every band centred


def test_per_patch_model_needs_its_patch_means_and_counts_their_bits():
    model = per_patch_model()
    with pytest.raises(ValueError, match="patch_means"):
        model.decode(model.encode(dn(1, 12, 120, 120)))
    assert model.side_bits() == 12 * 16
    plain = build_model(tiny_config(name="rvq"))
    assert plain.side_bits() == 0 and plain.patch_means(dn(1, 12, 120, 120)) is None
    assert model.bpp_index() == plain.bpp_index()  # indices only, as DESIGN.md defines it
    assert "12 patch means x 16 bits, bpp_side 0.0133" in model.summary()
