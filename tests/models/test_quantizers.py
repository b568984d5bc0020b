"""Behaviour every quantizer shares: straight-through gradients, encode/decode, perplexity."""

from __future__ import annotations

import pytest
import torch

from vqae.config import QuantizerConfig
from vqae.errors import ConfigError
from vqae.models import FSQ, QUANTIZERS, ResidualVQ, VectorQuantizer

DIM = 8


def make(name: str, **overrides) -> torch.nn.Module:
    cfg = QuantizerConfig(name=name, codebook_size=32, levels=3, fsq_levels=[4, 3, 3])
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return QUANTIZERS[name].from_config(cfg, DIM)


def latents(seed: int = 0, batch: int = 4, side: int = 6) -> torch.Tensor:
    return torch.randn(batch, DIM, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["vq", "rvq"])
@pytest.mark.parametrize("ema", [True, False])
def test_straight_through_gradient_is_exact(name, ema):
    torch.manual_seed(0)
    quantizer = make(name, ema=ema, beta=0.0)
    z = latents().requires_grad_()
    out = quantizer(z)
    grad = torch.randn_like(out.quantized)
    out.quantized.backward(grad)
    assert torch.equal(z.grad, grad)  # identity path: not approximately, exactly


def test_rotation_trick_keeps_code_values_and_rotates_gradient():
    torch.manual_seed(0)
    quantizer = make("vq", rotation_trick=True)
    z = latents().requires_grad_()
    out = quantizer(z)
    assert torch.allclose(out.quantized, quantizer.decode(out.indices), atol=1e-6)
    out.quantized.square().sum().backward()
    assert torch.isfinite(z.grad).all() and not torch.equal(z.grad, 2 * out.quantized.detach())


def test_fsq_gradient_is_straight_through_rounding():
    fsq = FSQ(3, levels=[4, 3, 3])  # dim == len(levels): no projections
    z = latents()[:, :3].clone().requires_grad_()
    fsq(z).quantized.sum().backward()
    smooth = z.detach().clone().requires_grad_()
    bounded = fsq.bound(smooth.movedim(1, -1)) / fsq.half_width
    bounded.sum().backward()
    assert torch.allclose(z.grad, smooth.grad, atol=1e-6)


@pytest.mark.parametrize("name", ["vq", "rvq", "fsq"])
@pytest.mark.parametrize("codebook_dim", [0, 4])
def test_decode_of_encode_equals_quantized_in_eval(name, codebook_dim):
    torch.manual_seed(0)
    quantizer = make(name, codebook_dim=codebook_dim)
    quantizer(latents(1))  # one training step: k-means init and an EMA update
    quantizer.eval()
    z = latents(2)
    out = quantizer(z)
    indices = quantizer.encode(z)
    assert indices.dtype == torch.long
    assert indices.shape == (4, quantizer.num_levels, 6, 6)
    assert torch.equal(indices, out.indices)
    assert torch.equal(quantizer.decode(indices), out.quantized)


@pytest.mark.parametrize("name", ["vq", "rvq", "fsq"])
def test_perplexity_within_one_and_codebook_size(name):
    torch.manual_seed(0)
    quantizer = make(name)
    for seed in range(3):
        out = quantizer(latents(seed))
        assert out.perplexity.shape == (quantizer.num_levels,)
        assert ((out.perplexity >= 1 - 1e-5) & (out.perplexity <= quantizer.codebook_size)).all()
        assert ((out.usage > 0) & (out.usage <= 1)).all()


def test_perplexity_is_one_for_a_single_code():
    quantizer = VectorQuantizer(DIM, codebook_size=16, kmeans_init=False).eval()
    out = quantizer(torch.zeros(2, DIM, 3, 3))
    assert out.perplexity.item() == pytest.approx(1.0)


def test_codebook_sizes_and_levels():
    assert make("vq").codebook_size == 32 and make("vq").num_levels == 1
    assert make("rvq").codebook_size == 32 and make("rvq").num_levels == 3
    assert make("fsq").codebook_size == 36 and make("fsq").num_levels == 1


def test_gradient_codebook_gets_codebook_loss_gradient():
    quantizer = make("vq", ema=False, kmeans_init=False)
    out = quantizer(latents())
    assert set(out.losses) == {"commitment", "codebook"}
    sum(out.losses.values()).backward()
    assert quantizer.embed.grad is not None and quantizer.embed.grad.abs().sum() > 0


def test_cosine_distance_uses_unit_codes():
    quantizer = make("vq", distance="cosine")
    out = quantizer(latents())
    assert torch.allclose(quantizer.codes().norm(dim=1), torch.ones(32), atol=1e-5)
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(4, 6, 6), atol=1e-5)


def test_quantizer_math_stays_fp32_under_autocast():
    quantizer = make("rvq")
    z = latents().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(z)
    assert out.quantized.dtype == torch.bfloat16
    assert quantizer.layers[0].embed.dtype == torch.float32
    assert torch.isfinite(out.losses["commitment"])


def test_unknown_distance_names_valid_ones():
    with pytest.raises(ConfigError, match="l2, cosine"):
        make("vq", distance="manhattan")


def test_rvq_n_q_out_of_range_names_the_fix():
    with pytest.raises(ValueError, match="quantizer.levels"):
        make("rvq")(latents(), n_q=4)


def test_residual_vq_is_registered():
    assert QUANTIZERS["rvq"] is ResidualVQ
