"""Tiny k-means-initialised RVQ models saved as checkpoints, and fake patch trees, for the codec.

The model is untrained: one forward pass in training mode initialises its codebooks by k-means,
which is all the codec needs (real index statistics, real decoder output).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fakes import write_fake_tree
from vqae.checkpoint import save_checkpoint
from vqae.config import load_config, to_dict
from vqae.data.source import DataSource
from vqae.models import build_model

TINY = ["model.widths=[8,16]", "model.latent_dim=8", "model.groups=4",
        "model.blocks_per_stage=1", "quantizer.name=rvq", "quantizer.depth=3",
        "quantizer.codebook_size=32", "quantizer.kmeans_iters=3", "data.num_workers=0"]


def make_checkpoint(path: Path, data: Path, seed: int = 0, fit: bool = True,
                    overrides: list[str] = ()) -> Path:
    """A tiny model k-means-initialised on `data`, its prior fitted on every patch."""
    from vqae.entropy.fit import fit_prior

    cfg = load_config(None, [*TINY, f"data.path={data}", *overrides])
    torch.manual_seed(seed)
    model = build_model(cfg)
    with DataSource(cfg.data) as source:
        ds = source.dataset("all")
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])  # (N, C, 120, 120)
        model.train()
        with torch.no_grad():
            model(x)  # k-means initialisation of every stage's codebook
        model.eval()
        if fit:
            fit_prior(model, ds, torch.device("cpu"), batch_size=8, progress=False)
    return save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(cfg)})


@pytest.fixture(scope="session")
def fake_patches(tmp_path_factory) -> Path:
    """Eight seeded fake S2 patches (v1 layout, native band sizes)."""
    root = tmp_path_factory.mktemp("codec-data") / "tiffs"
    write_fake_tree(root, n=8, layout="v1", seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, fake_patches) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", fake_patches)


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory, fake_patches) -> Path:
    """The same architecture with other weights (another seed)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "other.pt", fake_patches, seed=1)
