"""VectorQuantizer: a K x d codebook learned by EMA or by gradient, straight-through gradients.

Hot path per step: one addmm + argmin for distances, one gather for the codes, two index_add_
for the code counts and EMA sums (no (N, K) one-hot matrices), and no host sync after the k-means
init: the GPU never waits for Python to read a value back, so kernels queue ahead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqae.models.kmeans import kmeans, nearest, sample_rows
from vqae.models.normalize import wide
from vqae.models.quantizer import (
    Quantizer,
    QuantizerOutput,
    code_counts,
    flatten,
    fp32,
    mse,
    unflatten,
    unflatten_channel_first,
    unflatten_like,
)
from vqae.models.sync import all_reduce_sum

DISTANCES = ("l2", "cosine")


def rotate_to(h: Tensor, q: Tensor) -> Tensor:
    """Rotation trick (Fifty et al. 2024): value q, gradient through the rotation that maps h to q.

    R h = h - 2 r (r.h) + 2 v (u.h) with u = h/|h|, v = q/|q|, r = (u+v)/|u+v|, scaled by |q|/|h|;
    R and the scale are constants for autograd.
    """
    hd, q = h.detach(), q.detach()
    h_norm = hd.norm(dim=1, keepdim=True).clamp_min(1e-6)
    q_norm = q.norm(dim=1, keepdim=True).clamp_min(1e-6)
    u, v = hd / h_norm, q / q_norm
    r = F.normalize(u + v, dim=1)
    rotated = h - 2 * r * (r * h).sum(1, keepdim=True) + 2 * v * (u * h).sum(1, keepdim=True)
    out = rotated * (q_norm / h_norm)
    return out + (q - out).detach()  # exact code values forward; rotation gradient backward


class VectorQuantizer(Quantizer):
    depth = 1

    def __init__(
        self,
        dim: int,
        *,
        codebook_size: int = 1024,
        codebook_dim: int = 0,
        distance: str = "l2",
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        beta: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        revive_threshold: float = 0.03,
        rotation_trick: bool = False,
        rate_weight: float = 0.0,
    ):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance {distance!r} unknown; valid: {', '.join(DISTANCES)}")
        self.dim, self.codebook_size = dim, codebook_size
        self.cosine, self.ema, self.decay, self.eps, self.beta = distance == "cosine", ema, decay, eps, beta
        self.kmeans_iters, self.revive_threshold = kmeans_iters, revive_threshold
        self.rotation_trick = rotation_trick
        if rate_weight and distance != "l2":
            raise ValueError("rate_weight (entropy-constrained VQ) needs distance='l2'")
        self.rate_weight = rate_weight
        inner = codebook_dim or dim
        self.project_in = nn.Linear(dim, inner) if codebook_dim else nn.Identity()
        self.project_out = nn.Linear(inner, dim) if codebook_dim else nn.Identity()
        embed = torch.randn(codebook_size, inner)
        if self.cosine:
            embed = F.normalize(embed, dim=1)
        if ema:
            self.register_buffer("embed", embed)  # (K, d) = embed_sum / smoothed cluster_size
            self.register_buffer("embed_sum", embed.clone())  # (K, d) EMA of assigned-row sums
        else:
            self.embed = nn.Parameter(embed)
        # EMA of per-code counts (all ranks); starts at 1 so embed_sum / cluster_size == embed
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self._initted = not kmeans_init  # host copy of `initted`: reading the buffer would sync

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initted = bool(self.initted)  # one sync per load, none per step

    def codes(self) -> Tensor:
        """(K, d) fp32 code vectors as used for lookup (unit length with cosine distance)."""
        embed = wide(self.embed)
        return F.normalize(embed, dim=1) if self.cosine else embed

    def forward(self, z: Tensor, depth: int | None = None) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S), indices (B, 1, *S)."""
        self.check_depth(depth)
        with fp32(z.device):
            out, idx, losses, counts = self.quantize_rows(flatten(z))
        return QuantizerOutput(
            quantized=unflatten_like(out, z),
            indices=unflatten(idx[:, None], z.shape),
            losses=losses,
            counts=counts[None],
        )

    def quantize_rows(self, x: Tensor, mask: Tensor | None = None
                      ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """fp32 rows (N, D) -> straight-through values (N, D), indices (N,), losses, counts (K,).

        Rows where `mask` (N,) is False are skipped (quantizer dropout): they output 0 and index
        -1, and count toward no loss, histogram or codebook update. Masking rather than selecting
        the kept rows keeps every shape fixed, so nothing waits for the device to count them.
        """
        h = self._project(x)  # (N, d)
        if self.training and not self._initted:
            self._init_codebook(h.detach() if mask is None else h.detach()[mask])
        codes = self.codes()
        idx = nearest(h.detach(), codes, self.cosine, self._code_costs(codes))  # (N,)
        # (N, d); carries the codebook gradient when not EMA. index_select, as its backward is
        # an index_add_: F.embedding's sorts the indices and reads a count back on CUDA
        q = codes.index_select(0, idx)
        losses = self._losses(h, q, mask)
        out = self.project_out(self._straight_through(h, q))
        counts = code_counts(idx, self.codebook_size, mask)  # (K,)
        if self.training:
            self._update(h.detach(), idx, counts, mask)
        if mask is not None:
            out, idx = torch.where(mask[:, None], out, 0.0), torch.where(mask, idx, -1)
        return out, idx, losses, counts

    def _project(self, x: Tensor) -> Tensor:
        h = self.project_in(x)  # (N, d)
        return F.normalize(h, dim=1) if self.cosine else h

    def _losses(self, h: Tensor, q: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        losses = {"commitment": self.beta * mse(h, q.detach(), mask)}
        if not self.ema:
            losses["codebook"] = mse(q, h.detach(), mask)
        return losses

    def _straight_through(self, h: Tensor, q: Tensor) -> Tensor:
        """Forward value exactly q; gradient to h exactly the incoming one (or rotated)."""
        if self.rotation_trick and h.requires_grad:
            return rotate_to(h, q)
        return q.detach() + (h - h.detach())

    @torch.no_grad()
    def encode(self, z: Tensor, depth: int | None = None) -> Tensor:
        """(B, D, *S) -> indices (B, 1, *S)."""
        self.check_depth(depth)
        with fp32(z.device):
            idx = self.encode_rows(flatten(z))
        return unflatten(idx[:, None], z.shape)

    def encode_rows(self, x: Tensor) -> Tensor:
        """fp32 rows (N, D) -> nearest code indices (N,)."""
        codes = self.codes()
        return nearest(self._project(x), codes, self.cosine, self._code_costs(codes))

    def _code_costs(self, codes: Tensor) -> Tensor | None:
        """(K,) ||e||^2 + rate_weight * code length in bits under the EMA usage (entropy-
        constrained VQ, Chou et al. 1989): a rarely used code must be closer by that many bits'
        worth of squared distance to be chosen. None (plain nearest) when rate_weight is 0."""
        if not self.rate_weight:
            return None
        bits = -torch.log2(self._smoothed_sizes() / self.cluster_size.sum())  # (K,)
        return codes.pow(2).sum(dim=1) + self.rate_weight * bits

    def decode(self, indices: Tensor) -> Tensor:
        """indices (B, 1, *S) -> code values (B, D, *S) in fp32."""
        with fp32(indices.device):
            rows = self.decode_rows(indices[:, 0].reshape(-1))
        return unflatten_channel_first(rows, indices.shape)

    def decode_rows(self, idx: Tensor) -> Tensor:
        """indices (N,) -> code values (N, D)."""
        return self.project_out(F.embedding(idx, self.codes()))

    @torch.no_grad()
    def _init_codebook(self, h: Tensor) -> None:
        centres, counts = kmeans(h, self.codebook_size, self.kmeans_iters, self.cosine, self.codes())
        counts = counts.clamp_min(1)  # empty clusters keep their seed instead of decaying to 0
        self.embed.data.copy_(centres)
        self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_sum.copy_(centres * counts[:, None])
        self.initted.fill_(True)
        self._initted = True

    @torch.no_grad()
    def _update(self, h: Tensor, idx: Tensor, counts: Tensor, mask: Tensor | None) -> None:
        """EMA of counts (always, for usage and revival) and of sums (EMA codebooks); `counts`
        already leaves out the masked rows, and so do the sums."""
        counts = counts.float()
        if self.ema:
            rows = h if mask is None else torch.where(mask[:, None], h, 0.0)  # skipped rows add 0
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, rows)  # (K, d)
            stats = all_reduce_sum(torch.cat([counts[:, None], sums], dim=1))  # (K, 1 + d)
            counts, sums = stats[:, 0], stats[:, 1:]
            self.embed_sum.lerp_(sums, 1 - self.decay)
        else:
            counts = all_reduce_sum(counts)
        self.cluster_size.lerp_(counts, 1 - self.decay)
        if self.ema:
            torch.div(self.embed_sum, self._smoothed_sizes()[:, None], out=self.embed)
        self._revive_rare(h, mask)

    def _smoothed_sizes(self) -> Tensor:
        """Laplace-smoothed cluster sizes: no division by ~0 for codes nobody picks."""
        size, k = self.cluster_size, self.codebook_size
        total = size.sum()
        return (size + self.eps) / (total + k * self.eps) * total

    def rare_mask(self) -> Tensor:
        """(K,) codes whose EMA usage is below revive_threshold times the uniform share 1/K."""
        share = self.cluster_size / self.cluster_size.sum().clamp_min(1e-12)
        return share < self.revive_threshold / self.codebook_size

    def rare_codes(self) -> Tensor:
        """(1,) number of codes the EMA usage marks for revival."""
        return self.rare_mask().sum()[None]

    @torch.no_grad()
    def _revive_rare(self, h: Tensor, mask: Tensor | None) -> None:
        """Re-seed rare codes from current rows (rank 0's kept rows, broadcast) at the uniform
        usage.

        Every code gets a candidate row and torch.where keeps it for the rare ones only: a few
        K x d elementwise ops instead of counting the rare codes on the host each step.
        Candidates are drawn with replacement, so two codes revived in one step may share a row;
        the argmin then picks one of them and the other is revived again.
        """
        if self.revive_threshold <= 0:
            return
        rare = self.rare_mask()  # identical on all ranks: cluster_size is all-reduced
        embed = self.embed.data
        seeds = sample_rows(h, self.codebook_size, fallback=embed.float(), mask=mask)  # (K, d)
        size = self.cluster_size.sum() / self.codebook_size
        torch.where(rare[:, None], seeds.to(embed.dtype), embed, out=embed)
        torch.where(rare, size, self.cluster_size, out=self.cluster_size)
        if self.ema:
            torch.where(rare[:, None], seeds * size, self.embed_sum, out=self.embed_sum)
