"""k-means (k-means++ seeding, then Lloyd) for codebook initialisation, synced across ranks."""

from __future__ import annotations

import torch
from torch import Tensor

from vqae.models.quantizer import code_counts
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


def sample_rows(rows: Tensor, n: int, fallback: Tensor, mask: Tensor | None = None) -> Tensor:
    """`n` rows drawn with replacement on rank 0 among those where `mask` (N,) (all without
    one), the same on every rank.

    `fallback` (n, d) stands in when rank 0 has no such row (a level skipped by dropout). No host
    sync: the draw is fixed-size and the empty case is a torch.where, not a branch on a count.
    """
    if is_rank0() and rows.shape[0] > 0:
        pick, found = random_rows(rows.shape[0], n, mask, rows.device)
        out = rows[pick].to(fallback.dtype)  # (n, d)
        if found is not None:
            out = torch.where(found, out, fallback)
    else:
        out = fallback.clone()  # the broadcast writes into it
    return broadcast_from_rank0(out.contiguous())


def random_rows(n_rows: int, n: int, mask: Tensor | None,
                device: torch.device) -> tuple[Tensor, Tensor | None]:
    """(n,) uniform row numbers among the rows where `mask`, and whether there was any."""
    if mask is None:
        return torch.randint(n_rows, (n,), device=device), None
    ends = mask.cumsum(0)  # (N,) rows kept up to and including each row
    kept = ends[-1]
    draw = torch.minimum((torch.rand(n, device=device) * kept).long(), kept - 1)  # rank among kept
    pick = torch.searchsorted(ends, draw, right=True)  # the row where the count passes draw
    return pick.clamp_max(n_rows - 1), kept > 0


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
        counts = code_counts(idx, k).float()
        stats = all_reduce_sum(torch.cat([counts[:, None], sums], dim=1))  # (k, 1 + d)
        counts = stats[:, :1]  # (k, 1)
        # empty clusters keep their seed
        centres = torch.where(counts > 0, stats[:, 1:] / counts.clamp_min(1), centres)
        if cosine:
            centres = torch.nn.functional.normalize(centres, dim=1)
    return centres, counts[:, 0]
