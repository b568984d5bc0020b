"""`vqae train` fits the prior at its end, so its checkpoints compress as they are."""

from __future__ import annotations

from tests.codec.conftest import TINY
from vqae.checkpoint.manager import load_model
from vqae.cli import main


def test_train_leaves_checkpoints_with_a_fitted_prior(fake_patches, tmp_path):
    run = tmp_path / "run"
    args = ["train", f"--data={fake_patches}", "--run.tracker=none", f"--run.dir={run}",
            "--train.steps=2", "--train.eval_every=1", "--data.batch_size=2",
            "--optim.warmup_steps=1", "--train.eval_images=0", "--data.split_ratios=[0.5,0.5,0]",
            *(f"--{o}" for o in TINY)]
    assert main(args) == 0
    for name in ("best.pt", "ckpt-00000002.pt"):
        model, _ = load_model(run / "checkpoints" / name)
        assert bool(model.prior.fitted), name
    assert main(["compress", str(run / "checkpoints" / "best.pt"), str(fake_patches), "-o",
                 str(tmp_path / "out"), "--no-progress"]) == 0
