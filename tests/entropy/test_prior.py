"""The prior: integer tables as buffers, contexts chosen by held-out bits, every index codable."""

from __future__ import annotations

import numpy as np
import torch

from vqae.checkpoint.manager import load_checkpoint, load_model, save_checkpoint
from vqae.entropy.fit import IndexCounts, fit_tables
from vqae.entropy.prior import NONE, PARENT, UP, Prior

K = 16


def structured_indices(n: int = 60, seed: int = 0) -> np.ndarray:
    """(n, 3, 8, 8): stage 0 constant along rows (an `up` context pays), stage 1 a function of
    stage 0 plus noise (a `parent` context pays), stage 2 uniform noise (no context pays)."""
    rng = np.random.default_rng(seed)
    idx = np.zeros((n, 3, 8, 8), dtype=np.int64)
    idx[:, 0] = rng.integers(0, K, (n, 1, 8))
    idx[:, 1] = (5 * idx[:, 0] + rng.integers(0, 2, (n, 8, 8))) % K
    idx[:, 2] = rng.integers(0, K, (n, 8, 8))
    return idx


def fitted(idx: np.ndarray):
    counts = IndexCounts(idx.shape[1], K, idx.shape[2])
    counts.add(idx)
    return fit_tables(counts)


def test_contexts_are_chosen_by_held_out_bits():
    _, kinds, _, fits = fitted(structured_indices())
    assert kinds == [UP, PARENT, NONE]
    assert fits[0].bits < fits[0].best_by_kind[NONE] - 1.0  # bits per index saved
    assert fits[1].bits < fits[1].best_by_kind[NONE] - 1.0
    assert fits[2].best_by_kind[NONE] <= min(fits[2].best_by_kind.values()) + 1e-9


def test_a_large_codebook_fits_a_marginal_without_context_tables():
    """FSQ [8, 8, 8, 5, 5, 5] has 64,000 codes: (K + 1) x K context counts would need 61 GB."""
    k = 64_000
    idx = np.random.default_rng(0).integers(0, 50, (8, 1, 15, 15)) * 1000  # 50 codes in use
    counts = IndexCounts(1, k, 15)
    assert list(counts.n) == [(0, NONE)]
    counts.add(idx)
    tables, kinds, _, fits = fit_tables(counts)
    assert kinds == [NONE] and fits[0].bits < np.log2(k) - 5


def test_tables_are_integers_and_every_index_stays_codable():
    freqs, _, clusters, _ = fitted(structured_indices())
    assert freqs.dtype == np.int64 and freqs.min() >= 1
    assert clusters.shape == (3, K + 1) and clusters.max() < freqs.shape[1]
    prior = Prior(3, K)
    prior.set_tables(freqs, [UP, PARENT, NONE], clusters)
    probs = prior.tables().probs
    assert probs.min() > 0 and np.allclose(probs.sum(-1), 1)
    again = prior.tables().probs  # the same bits every time, from the integers
    assert probs.tobytes() == again.tobytes()


def test_unfitted_prior_is_uniform():
    prior = Prior(2, K)
    assert not bool(prior.fitted)
    assert np.allclose(prior.tables().probs, 1 / K)


def test_fitted_prior_travels_in_the_checkpoint(tiny_ckpt):
    model, _ = load_model(tiny_ckpt)
    assert bool(model.prior.fitted)
    state = load_checkpoint(tiny_ckpt)["model"]
    assert torch.equal(model.prior.freqs, state["prior.freqs"])
    assert model.prior.freqs.dtype == torch.int32 and model.prior.freqs.shape[1] >= 1


def test_checkpoint_from_before_the_codec_loads_with_a_uniform_prior(tiny_ckpt, tmp_path):
    state = load_checkpoint(tiny_ckpt)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("prior.")}
    old = save_checkpoint(tmp_path / "old.pt", state)
    model, _ = load_model(old)
    assert not bool(model.prior.fitted)
