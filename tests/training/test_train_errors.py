"""Training's bad inputs and bad disks: one line naming the file and the fix, a non-zero exit,
nothing lost."""

import shutil

import pytest

from tests.fakes import patch_names, write_fake_tree
from tests.training.test_train import assert_same_weights, final_weights, train_args
from vqae.cli import main
from vqae.training.tracking import read_jsonl

QUICK = ["--train.steps=2", "--train.eval_every=2", "--run.tracker=none"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vqae train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_fresh_run_refuses_a_folder_with_an_earlier_run(sample_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, *QUICK)) == 0
    before = (run / "metrics.jsonl").read_text()
    assert main(train_args(run, *QUICK)) == 2
    msg = one_line_error(capsys)
    assert str(run) in msg and "--run.resume=auto" in msg and "--run.overwrite=true" in msg
    assert (run / "metrics.jsonl").read_text() == before  # nothing touched
    (run / "notes.txt").write_text("mine")
    assert main(train_args(run, *QUICK, "--train.steps=4", "--train.eval_every=4",
                           "--run.overwrite=true")) == 0
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "val/psnr" in r] == [4]
    assert [p.name for p in (run / "checkpoints").glob("ckpt-*.pt")] == ["ckpt-00000004.pt"]
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own outputs go


def test_overwrite_never_deletes_data_in_the_run_folder(sample_dir, tmp_path, capsys):
    """The training data copied into <run>/images, an earlier metrics.jsonl beside it: refused
    before anything is deleted (the data, then the --config file, named as the entry)."""
    run = tmp_path / "run"
    shutil.copytree(sample_dir / "BigEarthNet-V2-LMDB", run / "images")
    shutil.copy(sample_dir / "metadata.parquet", run / "metadata.parquet")
    (run / "metrics.jsonl").write_text('{"step": 2}\n')
    before = sorted((p.relative_to(run), p.stat().st_size) for p in run.rglob("*"))
    args = train_args(run, *QUICK, f"--data={run / 'images'}",
                      f"--data.splits={run / 'metadata.parquet'}", "--run.overwrite=true")
    assert main(args) == 2
    msg = one_line_error(capsys)
    assert str(run / "images") in msg and "deleted nothing" in msg
    assert sorted((p.relative_to(run), p.stat().st_size) for p in run.rglob("*")) == before
    shutil.move(run / "images", tmp_path / "lmdb")
    (run / "config.yaml").write_text("train:\n  steps: 2\n")
    assert main([*train_args(run, *QUICK, f"--data={tmp_path / 'lmdb'}", "--run.overwrite=true",
                             f"--data.splits={run / 'metadata.parquet'}"),
                 "--config", str(run / "config.yaml")]) == 2
    msg = one_line_error(capsys)
    assert str(run / "config.yaml") in msg and "is the input" in msg
    assert (run / "config.yaml").read_text() == "train:\n  steps: 2\n"


@pytest.mark.slow
def test_resume_from_a_torn_file_names_it(sample_dir, tmp_path, capsys):
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    assert main(train_args(tmp_path / "run", *QUICK, f"--run.resume={torn}")) == 2
    msg = one_line_error(capsys)
    assert str(torn) in msg and "unreadable" in msg and "--run.resume=auto" in msg


def broken_tree(root, n=12):
    """A GeoTIFF tree in which one patch's band is a truncated TIFF."""
    write_fake_tree(root, n=n)
    name = patch_names(n)[5]
    band = root / name / f"{name}_B04.tif"
    band.write_bytes(band.read_bytes()[:300])
    return band


@pytest.mark.slow
def test_bad_band_inside_a_loader_worker_is_one_line(tmp_path, capsys):
    band = broken_tree(tmp_path / "tiffs")
    args = train_args(tmp_path / "run", "--train.steps=12", "--train.eval_every=6",
                      "--run.tracker=none", f"--data={tmp_path / 'tiffs'}",
                      "--data.num_workers=1", "--data.batch_size=2",
                      "--data.split_ratios=[2,1,0]")
    assert main(args) == 2
    msg = one_line_error(capsys)
    assert str(band) in msg and "DataLoader worker" not in msg


@pytest.mark.slow
def test_full_disk_keeps_the_last_checkpoint_and_resume_completes(sample_dir, tmp_path, capsys,
                                                                  small_disk):
    common = ["--train.steps=4", "--train.checkpoint_every=2", "--train.eval_every=100",
              "--run.tracker=none", "--train.keep_last=1", "--train.eval_images=0"]
    assert main(train_args(tmp_path / "reference", *common)) == 0
    size = (tmp_path / "reference" / "checkpoints" / "ckpt-00000004.pt").stat().st_size
    disk = small_disk(f"{int(size * 1.6) // 1024}k")  # room for one checkpoint, not two
    run = disk / "run"
    assert main(train_args(run, *common)) == 2
    msg = one_line_error(capsys)
    assert "ckpt-00000004.pt" in msg and "--run.resume=auto" in msg
    kept = list((run / "checkpoints").iterdir())
    assert [p.name for p in kept] == ["ckpt-00000002.pt"]  # whole; no temp file left
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    assert main(train_args(moved, *common, "--run.resume=auto")) == 0
    assert_same_weights(final_weights(tmp_path / "reference"), final_weights(moved))


def test_read_only_run_folder(tmp_path, capsys, small_disk, fake_tree):
    root, _ = fake_tree
    disk = small_disk(readonly=True)
    args = train_args(disk / "run", *QUICK, f"--data={root}", "--data.split_ratios=[1,1,0]",
                      "--data.batch_size=2")
    assert main(args) == 2
    msg = one_line_error(capsys)
    assert str(disk / "run") in msg and "writable" in msg
