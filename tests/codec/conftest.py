"""Tiny k-means-initialised RVQ models saved as checkpoints, and fake patch trees, for the codec.

The model is untrained: one forward pass in training mode initialises its codebooks by k-means,
which is all the codec needs for indices and bitstreams (real index statistics). Its decoded
bands are not: their band-filter gains come out about 0, so several bands decode to one value,
and pixel tests run on `structured_ckpt` (briefly trained on the real sample) instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fakes import write_fake_tree
from vqae.checkpoint.manager import save_checkpoint
from vqae.config import load_config, to_dict
from vqae.data.sample import LMDB_NAME
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


# 30 steps of 2 patches at a high learning rate: every band decodes with the patch's structure
# (each band's decoded std >= 20 DN on the sample's test split; tiny_ckpt: 0 to 5 DN)
STRUCTURED = ["train.steps=30", "data.batch_size=2", "optim.lr=5e-3", "optim.warmup_steps=1",
              "train.eval_every=30", "train.checkpoint_every=30", "train.log_every=30",
              "train.eval_images=0", "run.tracker=none"]
FLAT_DN = 5.0  # a decoded band whose pixels vary less (std over the patch) carries no structure


@pytest.fixture(scope="session")
def structured_data(sample_dir) -> tuple[Path, list[str]]:
    """The input of the pixel tests and the arguments that pick its patches: the real sample's
    LMDB, its test split (2 of 24 patches, chosen by name hash)."""
    return sample_dir / LMDB_NAME, ["--split", "test"]


@pytest.fixture(scope="session")
def structured_ckpt(tmp_path_factory, sample_dir) -> Path:
    """TINY trained by `vqae train` (which fits the prior at its end) for 30 steps on the real
    sample's train split: its decoded bands reproduce the patches' spatial structure. About 6 s
    on 2 idle cores (several times that on a loaded machine), once per session."""
    from vqae.cli import main

    run = tmp_path_factory.mktemp("structured") / "run"
    args = [*TINY, *STRUCTURED, f"data.path={sample_dir / LMDB_NAME}", f"run.dir={run}"]
    assert main(["train", *(f"--{a}" for a in args)]) == 0
    return run / "checkpoints" / "best.pt"


def assert_structured(bands: dict[str, np.ndarray], where: str) -> None:
    """Every decoded band varies over the patch (std > FLAT_DN): fails on a band decoded to (about)
    one value, under which any two decodings of it compare equal."""
    flat = {b: round(float(a.std()), 2) for b, a in bands.items() if a.std() <= FLAT_DN}
    assert not flat, f"{where}: flat decoded bands (std in DN) {flat}"


def assert_coarser(full: dict[str, np.ndarray], cut: dict[str, np.ndarray], where: str) -> None:
    """A decoding at fewer stages differs from the full-depth one in every band."""
    same = [b for b in full if np.array_equal(full[b], cut[b])]
    assert not same, f"{where}: bands {same} decode the same at full depth and cut"
