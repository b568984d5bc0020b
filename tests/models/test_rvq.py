"""ResidualVQ: quantizer dropout, error versus depth, shared codebooks."""

from __future__ import annotations

import itertools

import torch

from vqae.models import ResidualVQ


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
