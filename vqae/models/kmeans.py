"""k-means (k-means++ seeding, then Lloyd) for codebook initialisation, synced across ranks."""

from __future__ import annotations

import torch
from torch import Tensor

from vqae.models.sync import all_reduce_sum, broadcast_from_rank0, is_rank0


def nearest(rows: Tensor, codes: Tensor, cosine: bool, codes_sq: Tensor | None = None) -> Tensor:
    """Index of the closest code for each row: (N, d), (K, d) -> (N,) long.

    L2 uses ||e||^2 - 2 z.e in one addmm (||z||^2 is the same for every code of a row, so it
    cannot change the argmin); cosine expects unit rows and codes and takes the largest dot.
    """
    if cosine:
        return (rows @ codes.t()).argmax(dim=1)
    if codes_sq is None:
        codes_sq = codes.pow(2).sum(dim=1)
    return torch.addmm(codes_sq, rows, codes.t(), alpha=-2.0).argmin(dim=1)  # (N, K) -> (N,)


def sample_rows(rows: Tensor, n: int, fallback: Tensor) -> Tensor:
    """`n` rows drawn on rank 0 (with replacement if it has fewer), the same on every rank.

    `fallback` (n, d) is used when rank 0 has no rows at all (a level skipped by dropout).
    """
    out = fallback.clone()
    if is_rank0() and rows.shape[0] > 0:
        if rows.shape[0] >= n:
            pick = torch.randperm(rows.shape[0], device=rows.device)[:n]
        else:
            pick = torch.randint(rows.shape[0], (n,), device=rows.device)
        out = rows[pick].to(out.dtype)
    return broadcast_from_rank0(out.contiguous())


def kmeans_pp(rows: Tensor, k: int, fallback: Tensor) -> Tensor:
    """k-means++ seeds from rank 0's rows, broadcast to all ranks: (N, d) -> (k, d)."""
    n = rows.shape[0]
    if not is_rank0() or n < k:
        return sample_rows(rows, k, fallback)
    centres = torch.empty(k, rows.shape[1], device=rows.device, dtype=rows.dtype)
    centres[0] = rows[torch.randint(n, (1,), device=rows.device)]
    d2 = (rows - centres[0]).pow(2).sum(dim=1)  # (N,) squared distance to the nearest seed
    for i in range(1, k):
        # the tiny floor keeps multinomial valid when every row already sits on a seed
        pick = torch.multinomial(d2 + 1e-20, 1)
        centres[i] = rows[pick]
        d2 = torch.minimum(d2, (rows - centres[i]).pow(2).sum(dim=1))
    return broadcast_from_rank0(centres)


@torch.no_grad()
def kmeans(rows: Tensor, k: int, iters: int, cosine: bool, fallback: Tensor) -> tuple[Tensor, Tensor]:
    """Centres (k, d) and their counts (k,) after `iters` Lloyd steps over all ranks' rows."""
    centres = kmeans_pp(rows, k, fallback)
    counts = torch.zeros(k, device=rows.device)
    for _ in range(max(iters, 1)):
        idx = nearest(rows, centres, cosine)
        sums = torch.zeros(k, rows.shape[1], device=rows.device).index_add_(0, idx, rows)
        counts = torch.bincount(idx, minlength=k).float()
        stats = all_reduce_sum(torch.cat([counts[:, None], sums], dim=1))  # (k, 1 + d)
        counts = stats[:, 0]
        filled = counts > 0  # empty clusters keep their seed
        centres[filled] = stats[filled, 1:] / counts[filled, None]
        if cosine:
            centres = torch.nn.functional.normalize(centres, dim=1)
    return centres, counts
