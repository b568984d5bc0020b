"""Behaviour every quantizer shares: the contract, straight-through gradients, encode/decode,
code histograms."""

from __future__ import annotations

import pytest
import torch

from vqae.config import QuantizerConfig
from vqae.metrics import perplexity, usage
from vqae.models import FSQ, QUANTIZERS, Quantizer, ResidualVQ, VectorQuantizer, quantizer_kwargs
from vqae.models.quantizer import HOST_SYNC_OPS

DIM = 8


def make(name: str, **overrides) -> torch.nn.Module:
    cfg = QuantizerConfig(name=name, codebook_size=32, depth=3 if name == "rvq" else 1,
                          levels=[4, 3, 3])
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return QUANTIZERS[name](DIM, **quantizer_kwargs(cfg))


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
    assert indices.shape == (4, quantizer.depth, 6, 6)
    assert torch.equal(indices, out.indices)
    assert torch.equal(quantizer.decode(indices), out.quantized)


@pytest.mark.parametrize("name", ["vq", "rvq", "fsq"])
def test_code_histogram_counts_every_position(name):
    torch.manual_seed(0)
    quantizer = make(name)
    for seed in range(3):
        out = quantizer(latents(seed))
        assert out.counts.shape == (quantizer.depth, quantizer.codebook_size)
        assert (out.counts.sum(dim=1) == 4 * 6 * 6).all()  # no dropout: every row, every stage
        p = perplexity(out.counts)
        assert ((p >= 1 - 1e-5) & (p <= quantizer.codebook_size)).all()
        assert ((usage(out.counts) > 0) & (usage(out.counts) <= 1)).all()


def test_perplexity_is_one_for_a_single_code():
    quantizer = VectorQuantizer(DIM, codebook_size=16, kmeans_init=False).eval()
    out = quantizer(torch.zeros(2, DIM, 3, 3))
    assert perplexity(out.counts).item() == pytest.approx(1.0)


def test_codebook_sizes_and_depths():
    assert make("vq").codebook_size == 32 and make("vq").depth == 1
    assert make("rvq").codebook_size == 32 and make("rvq").depth == 3
    assert make("fsq").codebook_size == 36 and make("fsq").depth == 1


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
    with pytest.raises(ValueError, match="l2, cosine"):
        make("vq", distance="manhattan")


@pytest.mark.parametrize("name", ["vq", "rvq", "fsq"])
def test_depth_out_of_range_is_refused(name):
    quantizer = make(name)
    with pytest.raises(ValueError, match=f"outside 1..{quantizer.depth}"):
        quantizer(latents(), depth=quantizer.depth + 1)


def test_every_quantizer_follows_the_contract_and_the_config_names_them_all():
    assert QUANTIZERS["rvq"] is ResidualVQ
    assert all(issubclass(cls, Quantizer) for cls in QUANTIZERS.values())
    from dataclasses import fields

    choices = {f.name: f.metadata.get("choices") for f in fields(QuantizerConfig)}["name"]
    assert set(choices) == set(QUANTIZERS)


def host_syncs(step) -> set[str]:
    """Names of the HOST_SYNC_OPS that `step()` called, seen by the profiler (on a CPU they
    cost nothing, but each is a full device sync on a GPU)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return {e.name for e in prof.events()} & set(HOST_SYNC_OPS)


def train_step(quantizer: torch.nn.Module, seed: int) -> None:
    out = quantizer(latents(seed).requires_grad_())
    (out.quantized.square().mean() + sum(out.losses.values())).backward()


@pytest.mark.parametrize("name", ["vq", "rvq"])
@pytest.mark.parametrize("ema", [True, False])
def test_training_step_makes_no_host_sync_after_the_kmeans_init(name, ema):
    torch.manual_seed(0)
    # dropout and a high revival threshold: the masked stages and the re-seeding run too
    quantizer = make(name, ema=ema, dropout=True, revive_threshold=0.9)
    assert host_syncs(lambda: train_step(quantizer, 0))  # the init may sync, and is seen to
    assert not host_syncs(lambda: train_step(quantizer, 1))
    fresh = make(name, ema=ema, dropout=True, revive_threshold=0.9)
    fresh.load_state_dict(quantizer.state_dict())  # initialised: no second k-means
    assert not host_syncs(lambda: train_step(fresh, 2))
