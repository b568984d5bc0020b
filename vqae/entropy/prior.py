"""Priors over code indices as integer frequency tables, registered buffers of the model.

Stage s of a patch's (depth, h, w) index grid is coded position by position with one row of
`freqs[s]` (rows of K integer frequencies, each >= 1, so every index stays codable). The row
follows from a context symbol that the decoder already knows:

- NONE:   no context (symbol 0);
- PARENT: the index of stage s-1 at the same position (residual VQ);
- UP:     the index of stage s one row above; the top row has the symbol K ("no neighbour").

`clusters[s]` maps the K + 1 context symbols to rows (contexts are clustered when fitting, so a
table has a few dozen rows, not K). The buffers travel in the state_dict, so a checkpoint and the
codec's model fingerprint carry them, as CompressAI keeps `_quantized_cdf`. Probabilities are
`freqs / row sum` in float64 on the CPU: integers and one IEEE division give the same bits on
every machine, so decoding never depends on GPU floating point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

NONE, PARENT, UP = 0, 1, 2
CONTEXT_NAMES = {NONE: "none", PARENT: "parent", UP: "up"}
BUFFERS = ("freqs", "context", "clusters", "fitted")


def context_symbols(indices: np.ndarray, stage: int, kind: int, codebook_size: int) -> np.ndarray:
    """Context symbol of each position of `stage`: (..., depth, h, w) -> (..., h, w) int64."""
    own = indices[..., stage, :, :]
    if kind == NONE:
        return np.zeros(own.shape, dtype=np.int64)
    if kind == PARENT:
        return indices[..., stage - 1, :, :].astype(np.int64)
    if kind == UP:
        out = np.full(own.shape, codebook_size, dtype=np.int64)  # (..., h, w), top row: none
        out[..., 1:, :] = own[..., :-1, :]
        return out
    raise ValueError(f"unknown context kind {kind}")


@dataclass(frozen=True)
class PriorTables:
    """The prior as CPU numpy arrays, built once per model for coding."""

    probs: np.ndarray  # (depth, C, K) float64, each row sums to 1
    clusters: np.ndarray  # (depth, K + 1) int64: context symbol -> row
    context: tuple[int, ...]  # context kind per stage

    @property
    def codebook_size(self) -> int:
        return self.probs.shape[-1]

    def row_ids(self, indices: np.ndarray, stage: int) -> np.ndarray:
        """Table row of each position of `stage`, (..., h, w), from the indices known so far."""
        ctx = context_symbols(indices, stage, self.context[stage], self.codebook_size)
        return self.clusters[stage][ctx]


class Prior(nn.Module):
    """Per-stage context-conditioned categorical priors; uniform until fitted."""

    def __init__(self, depth: int, codebook_size: int):
        super().__init__()
        self.depth, self.codebook_size = depth, codebook_size
        k = codebook_size
        self.register_buffer("freqs", torch.ones(depth, 1, k, dtype=torch.int32))  # (depth, C, K)
        self.register_buffer("context", torch.zeros(depth, dtype=torch.int32))  # (depth,)
        self.register_buffer("clusters", torch.zeros(depth, k + 1, dtype=torch.int32))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_tables(self, freqs: np.ndarray, context: list[int], clusters: np.ndarray) -> None:
        """Install fitted tables: freqs (depth, C, K) >= 1, clusters (depth, K + 1) < C."""
        freqs, clusters = np.asarray(freqs), np.asarray(clusters)
        assert freqs.shape[0] == self.depth and freqs.shape[2] == self.codebook_size
        assert clusters.shape == (self.depth, self.codebook_size + 1)
        assert freqs.min() >= 1 and 0 <= clusters.min() and clusters.max() < freqs.shape[1]
        device = self.freqs.device
        self.freqs = torch.as_tensor(freqs, dtype=torch.int32, device=device)
        self.context = torch.as_tensor(context, dtype=torch.int32, device=device)
        self.clusters = torch.as_tensor(clusters, dtype=torch.int32, device=device)
        self.fitted = torch.ones((), dtype=torch.bool, device=device)

    def tables(self) -> PriorTables:
        freqs = self.freqs.detach().cpu().numpy().astype(np.float64)  # exact: ints < 2**53
        return PriorTables(probs=freqs / freqs.sum(axis=-1, keepdims=True),
                           clusters=self.clusters.detach().cpu().numpy().astype(np.int64),
                           context=tuple(int(c) for c in self.context.tolist()))

    def describe(self) -> str:
        """One line: the context and number of table rows of each stage."""
        if not bool(self.fitted):
            return "not fitted (uniform)"
        parts = []
        for s, kind in enumerate(self.context.tolist()):
            rows = len(np.unique(self.clusters[s].cpu().numpy()))
            parts.append(f"{s}:{CONTEXT_NAMES[kind]}x{rows}")
        return "stage:context x rows " + " ".join(parts)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Tables take the saved shapes (their row count is chosen by fitting); a checkpoint
        from before the codec has none and keeps the uniform, unfitted prior."""
        if not any(prefix + name in state_dict for name in BUFFERS):
            return
        for name in ("freqs", "clusters"):
            saved = state_dict.get(prefix + name)
            own = self._buffers[name]
            if saved is not None and saved.ndim == own.ndim and saved.shape != own.shape:
                self._buffers[name] = own.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        k = self.codebook_size
        if self.freqs.shape[::2] != (self.depth, k) or self.clusters.shape != (self.depth, k + 1):
            error_msgs.append(f"{prefix}freqs {tuple(self.freqs.shape)} / clusters "
                              f"{tuple(self.clusters.shape)} do not fit depth {self.depth}, K {k}")
