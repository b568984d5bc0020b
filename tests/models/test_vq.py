"""VectorQuantizer codebook learning: EMA update, rare-code revival, k-means initialisation."""

from __future__ import annotations

import torch

from vqae.metrics import perplexity
from vqae.models import VectorQuantizer


def rows_as_latent(rows: list[list[float]]) -> torch.Tensor:
    """(N, D) rows -> (1, D, 1, N) latent whose flattened rows are exactly `rows` in order."""
    return torch.tensor(rows).t()[None, :, None, :]


def test_ema_update_matches_hand_computation():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(2, codebook_size=3, decay=decay, eps=eps, kmeans_init=False,
                         revive_threshold=0.0)
    embed = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    vq.embed.copy_(embed)
    vq.embed_sum.copy_(embed)  # cluster_size starts at 1, so embed_sum == embed
    out = vq(rows_as_latent([[0.1, 0.0], [0.9, 1.1], [1.2, 0.8], [4.0, 4.0]]))
    assert out.indices.flatten().tolist() == [0, 1, 1, 2]

    counts = [1.0, 2.0, 1.0]
    sums = [[0.1, 0.0], [2.1, 1.9], [4.0, 4.0]]
    size = [decay * 1.0 + (1 - decay) * c for c in counts]  # [1.0, 1.1, 1.0]
    acc = [[decay * e + (1 - decay) * s for e, s in zip(er, sr)] for er, sr in zip(embed.tolist(), sums)]
    total = sum(size)
    smoothed = [(n + eps) / (total + 3 * eps) * total for n in size]
    expected = [[a / n for a in row] for row, n in zip(acc, smoothed)]

    assert torch.allclose(vq.cluster_size, torch.tensor(size), atol=1e-6)
    assert torch.allclose(vq.embed_sum, torch.tensor(acc), atol=1e-6)
    assert torch.allclose(vq.embed, torch.tensor(expected), atol=1e-6)


def test_eval_mode_leaves_codebook_untouched():
    vq = VectorQuantizer(2, codebook_size=4, kmeans_init=False).eval()
    before = vq.embed.clone()
    vq(torch.randn(2, 2, 3, 3))
    assert torch.equal(vq.embed, before)


def two_clusters(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]])[torch.arange(64) % 2]
    return rows_as_latent((centres + 0.3 * torch.randn(64, 2, generator=gen)).tolist())


def test_rare_codes_are_revived_from_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(2, codebook_size=4, decay=0.5, kmeans_init=False, revive_threshold=0.5)
    far = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]])
    vq.embed.copy_(far)  # every row picks code 0: codes 1..3 are never used
    vq.embed_sum.copy_(far)
    first = vq(two_clusters(0))
    assert first.indices.unique().tolist() == [0]
    assert vq.embed.abs().max() < 12  # the far codes were re-seeded inside the data
    for seed in range(1, 6):
        out = vq(two_clusters(seed))
    assert out.indices.unique().numel() >= 2  # revived codes now take part
    assert perplexity(out.counts).item() > 1.5


def test_kmeans_init_lands_on_cluster_centres():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    gen = torch.Generator().manual_seed(1)
    rows = centres[torch.arange(400) % 4] + 0.1 * torch.randn(400, 2, generator=gen)
    vq = VectorQuantizer(2, codebook_size=4, kmeans_init=True, kmeans_iters=10,
                         revive_threshold=0.0)
    vq(rows_as_latent(rows.tolist()))
    assert bool(vq.initted)
    distance = torch.cdist(centres, vq.embed)  # (4 true, 4 codes)
    assert (distance.min(dim=1).values < 0.05).all()
    assert sorted(distance.argmin(dim=1).tolist()) == [0, 1, 2, 3]  # one code per cluster


def test_rare_code_count_is_exposed():
    vq = VectorQuantizer(2, codebook_size=4, kmeans_init=False, revive_threshold=0.5)
    vq.cluster_size.copy_(torch.tensor([10.0, 10.0, 0.01, 0.0]))
    assert vq.rare_codes().tolist() == [2]


def far_codebook(**kwargs) -> VectorQuantizer:
    """Codes 1..3 far from any data, so only code 0 is used and 1..3 become rare at once."""
    vq = VectorQuantizer(2, codebook_size=4, decay=0.5, kmeans_init=False, revive_threshold=0.5,
                         **kwargs)
    far = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]])
    vq.embed.copy_(far)
    vq.embed_sum.copy_(far)
    return vq


def test_masked_rows_neither_seed_revived_codes_nor_count():
    torch.manual_seed(0)
    vq = far_codebook()
    mask = torch.arange(64) % 2 == 0  # kept rows interleaved with skipped ones
    rows = torch.full((64, 2), 1000.0)  # skipped rows would re-seed codes far outside the data
    rows[mask] = torch.randn(32, 2)  # kept rows, near code 0
    out, idx, losses, counts = vq.quantize_rows(rows, mask)
    assert (idx[~mask] == -1).all() and (idx[mask] == 0).all()
    assert (out[~mask] == 0).all()
    assert counts.tolist() == [32, 0, 0, 0]
    assert vq.embed.abs().max() < 10  # codes 1..3 were re-seeded from kept rows only
    assert torch.isfinite(losses["commitment"])


def test_revival_with_no_kept_row_keeps_the_codes():
    vq = far_codebook()
    before = vq.embed.clone()
    _, idx, losses, counts = vq.quantize_rows(torch.randn(8, 2), torch.zeros(8, dtype=torch.bool))
    assert (idx == -1).all() and counts.sum() == 0 and losses["commitment"] == 0
    assert torch.equal(vq.embed, before)  # nothing to draw from: rare codes keep their values


def test_rate_weight_trades_distance_for_code_length():
    """Entropy-constrained VQ: a row a little closer to a rare code takes the frequent one once
    the rare code's extra bits, times rate_weight, outweigh the distance it saves."""
    def quantizer(rate_weight):
        vq = VectorQuantizer(2, codebook_size=2, kmeans_init=False, revive_threshold=0,
                             rate_weight=rate_weight)
        vq.embed.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        vq.cluster_size.copy_(torch.tensor([255.0, 1.0]))  # code 1: 8 bits, code 0: ~0 bits
        return vq.eval()

    rows = torch.tensor([[0.6, 0.0], [0.95, 0.0]])  # squared-distance savings 0.2 and 0.9
    assert quantizer(0.0).encode_rows(rows).tolist() == [1, 1]
    assert quantizer(0.05).encode_rows(rows).tolist() == [0, 1]  # 8 bits cost 0.4
    vq = quantizer(0.05).train()
    _, idx, _, _ = vq.quantize_rows(rows)
    assert idx.tolist() == [0, 1]  # training assigns by the same rule
