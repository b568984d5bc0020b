"""ResidualVQ: quantizer dropout, error versus depth, shared codebooks."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from vqae.models import ResidualVQ
from vqae.models.quantizer import flatten


def data(seed: int, batch: int = 8, side: int = 4) -> torch.Tensor:
    return torch.randn(batch, 8, side, side, generator=torch.Generator().manual_seed(seed))


def active_stages(indices: torch.Tensor) -> torch.Tensor:
    """(B, depth, h, w) -> (B,) stages used, checking they are a prefix at every position."""
    used = indices >= 0
    counts = used.sum(dim=1)  # (B, h, w)
    assert (counts == counts[:, :1, :1]).all()  # one stage count per example
    prefix = torch.arange(indices.shape[1])[None, :, None, None] < counts[:, None]
    assert torch.equal(used, prefix)  # stages 0..n-1 used, the rest -1
    return counts[:, 0, 0]


def test_quantizer_dropout_level_counts():
    torch.manual_seed(0)
    # a gradient-learned codebook without revival stays fixed during forward, so decode can check
    rvq = ResidualVQ(8, depth=4, dropout=True, codebook_size=16, kmeans_init=False, ema=False,
                     revive_threshold=0.0)
    out = rvq(data(0, batch=400, side=2))
    counts = active_stages(out.indices)
    histogram = torch.bincount(counts, minlength=5)
    assert histogram[0] == 0 and (histogram[1:] > 60).all()  # uniform over 1..4 (100 expected)

    one = counts == 1  # an example with one stage is quantized by stage 0 alone
    level0 = rvq.layers[0].decode(out.indices[one][:, :1])
    assert torch.equal(out.quantized[one], level0)

    limited = rvq(data(1, batch=200, side=2), depth=2)
    assert limited.indices.shape[1] == 2
    assert set(active_stages(limited.indices).tolist()) == {1, 2}


def test_no_dropout_in_eval_or_when_disabled():
    rvq = ResidualVQ(8, depth=3, dropout=True, codebook_size=16, kmeans_init=False).eval()
    assert (active_stages(rvq(data(0)).indices) == 3).all()
    rvq = ResidualVQ(8, depth=3, dropout=False, codebook_size=16, kmeans_init=False)
    assert (active_stages(rvq(data(0)).indices) == 3).all()


def test_reconstruction_error_decreases_with_depth():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, depth=4, codebook_size=32)
    for seed in range(5):
        rvq(data(seed, batch=32))
    rvq.eval()
    z = data(100, batch=32)
    errors = [(rvq.decode(rvq.encode(z, depth=n)) - z).pow(2).mean().item() for n in range(1, 5)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.5 * errors[0]


def test_shared_codebook_is_one_module():
    rvq = ResidualVQ(8, depth=3, shared_codebook=True, codebook_size=16)
    assert all(layer is rvq.layers[0] for layer in rvq.layers)
    separate = ResidualVQ(8, depth=3, codebook_size=16)
    assert sum(b.numel() for b in rvq.buffers()) * 3 == sum(b.numel() for b in separate.buffers())


def subset_forward(rvq: ResidualVQ, z: torch.Tensor):
    """The form before masking, as the reference: each stage quantizes only the rows of the
    examples that keep it, selected with nonzero, and scatters them back."""
    depth, rows_per_example = rvq.depth, z[0, 0].numel()
    keep = rvq.stages_per_example(z.shape[0], depth, z.device).repeat_interleave(rows_per_example)
    x = flatten(z)
    total, idx, losses, counts = rvq.layers[0].quantize_rows(x)
    residual, indices, histograms = (x - total).detach(), [idx], [counts]
    for stage in range(1, depth):
        rows = (keep > stage).nonzero().squeeze(1)
        out, idx, parts, counts = rvq.layers[stage].quantize_rows(residual[rows])
        out = torch.zeros_like(residual).index_copy(0, rows, out)
        idx = idx.new_full(residual.shape[:1], -1).index_copy(0, rows, idx)
        total, residual = total + out, residual - out.detach()
        indices.append(idx)
        histograms.append(counts)
        losses = {name: losses[name] + parts[name] for name in losses}
    return total, torch.stack(indices, dim=1), losses, torch.stack(histograms)


@pytest.mark.parametrize("ema", [True, False])
def test_dropout_masks_match_the_subset_form(ema):
    """Same seed, same draws: masked rows give the outputs, indices, losses, histograms, EMA
    statistics and gradients that quantizing only the kept rows gave."""
    torch.manual_seed(0)
    masked = ResidualVQ(8, depth=4, dropout=True, codebook_size=16, ema=ema, kmeans_init=True,
                        kmeans_iters=3, revive_threshold=0.0)  # revival draws differ by design
    subset = copy.deepcopy(masked)
    for step in range(3):  # the first step also runs the k-means init on the kept rows
        z = data(step, batch=6, side=3).requires_grad_()
        z_ref = z.detach().clone().requires_grad_()
        torch.manual_seed(100 + step)
        out = masked(z)
        torch.manual_seed(100 + step)
        total, indices, losses, counts = subset_forward(subset, z_ref)

        assert torch.equal(flatten(out.quantized), total)
        assert torch.equal(out.indices.movedim(1, -1).reshape(-1, 4), indices)
        assert torch.equal(out.counts, counts)
        assert (indices == -1).any()  # dropout really skipped rows
        assert out.losses.keys() == losses.keys()
        for name in losses:
            assert torch.allclose(out.losses[name], losses[name], rtol=1e-5, atol=1e-7), name
        sum(out.losses.values()).add(out.quantized.square().mean()).backward()
        sum(losses.values()).add(total.square().mean()).backward()
        assert torch.allclose(z.grad, z_ref.grad, rtol=1e-5, atol=1e-7)
        for (name, a), b in zip(masked.named_parameters(), subset.parameters()):
            assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), name
        for (name, a), b in zip(masked.state_dict().items(), subset.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name
