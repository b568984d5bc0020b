"""k-means helpers: the sync-free row sampler used by k-means seeding and code revival."""

from __future__ import annotations

import torch

from vqae.models.kmeans import random_rows, sample_rows


def test_random_rows_draw_every_kept_row_and_only_those():
    torch.manual_seed(0)
    mask = torch.tensor([False, True, False, False, True, True, False])
    pick, found = random_rows(7, 3000, mask, torch.device("cpu"))
    assert bool(found)
    assert torch.bincount(pick, minlength=7).nonzero().flatten().tolist() == [1, 4, 5]
    assert (torch.bincount(pick, minlength=7)[mask] > 900).all()  # uniform: 1000 expected


def test_sample_rows_falls_back_when_no_row_is_kept():
    rows, fallback = torch.randn(5, 2), torch.full((3, 2), 7.0)
    out = sample_rows(rows, 3, fallback, mask=torch.zeros(5, dtype=torch.bool))
    assert torch.equal(out, fallback) and out is not fallback
    drawn = sample_rows(rows, 4, fallback[:1].expand(4, 2))
    assert all(any(torch.equal(row, r) for r in rows) for row in drawn)
