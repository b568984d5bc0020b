"""`vqae compress` reports each patch and the worst ones; `--target-psnr` / `--target-bpppb`
code each patch the cheapest way that reaches the target. Checked against real files decoded
by the API, on a trained model and real patches."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from vqae.cli import main
from vqae.codec.bandfilter import KINDS
from vqae.codec.codec import Codec
from vqae.codec.folder_compress import CompressOptions, compress
from vqae.data.source import source_at
from vqae.metrics import bpp_coded, bpppb, psnr


def patches_of(codec: Codec, data, split="all") -> dict[str, torch.Tensor]:
    with source_at(codec.config.data, str(data)) as source:
        ds = source.dataset(split)
        return {item["name"]: item["image"] for item in (ds[i] for i in range(len(ds)))}


def real_psnr(codec: Codec, data: bytes, x: torch.Tensor) -> float:
    """PSNR of what `decompress` gives for a file, against the patch."""
    bands = codec.decompress(data)
    recon = torch.from_numpy(np.stack([bands[b] for b in codec.bands]).astype(np.float32))
    return float(psnr(x[None], recon[None], offset=codec.model.normalize.offsets().cpu()))


def report(out) -> dict[str, dict]:
    with open(out / "patches.csv", newline="") as f:
        return {row["patch"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def setup(structured_ckpt, structured_data):
    codec = Codec.from_checkpoint(structured_ckpt, "cpu")
    return codec, structured_data[0], patches_of(codec, structured_data[0])


def test_compress_reports_each_patch_and_the_worst(setup, structured_ckpt, tmp_path):
    codec, data, patches = setup
    out = tmp_path / "out"
    figures = compress(str(structured_ckpt), str(data), str(out),
                       CompressOptions(progress=False, psnr_threshold=35.0))
    rows = report(out)
    assert set(rows) == set(patches) and figures["patches"] == len(patches)
    measured = []
    for name, row in rows.items():
        blob = (out / f"{name}.vqz").read_bytes()
        assert int(row["bytes"]) == len(blob) and int(row["depth"]) == codec.depth
        assert row["band_filter"] == "gain"
        assert float(row["bpppb"]) == pytest.approx(bpppb(bpp_coded(len(blob)), 12), rel=1e-5)
        measured.append(real_psnr(codec, blob, patches[name]))
        assert float(row["psnr"]) == pytest.approx(measured[-1], abs=1e-4)  # what you get
    measured = np.array(measured)
    assert figures["psnr"] == pytest.approx(measured.mean(), abs=0.01)
    assert figures["psnr_min"] == pytest.approx(measured.min(), abs=0.01)
    pooled = 10 * np.log10(1e8 / np.mean(1e8 / 10 ** (measured / 10)))
    assert figures["psnr_pooled"] == pytest.approx(pooled, abs=0.01)
    assert figures["patches_below"] == int((measured < 35.0).sum())
    assert figures["psnr_threshold"] == 35.0
    assert json.loads((out / "manifest.json").read_text())["report"] == "patches.csv"


def every_way(codec: Codec, x: torch.Tensor) -> list[tuple[int, float, int, str]]:
    """(bytes, real PSNR, depth, filter) of each file the API makes of one patch."""
    ways = []
    for depth in range(1, codec.depth + 1):
        for kind in KINDS:
            blob = codec.compress(x.numpy(), depth, kind)
            ways.append((len(blob), real_psnr(codec, blob, x), depth, kind))
    return ways


def test_target_psnr_picks_the_smallest_file_that_reaches_it(setup, structured_ckpt, tmp_path):
    codec, data, patches = setup
    names = sorted(patches)[:6]
    ways = {name: every_way(codec, patches[name]) for name in names}
    target = float(np.median([w[1] for name in names for w in ways[name]]))
    out = tmp_path / "target"
    figures = compress(str(structured_ckpt), str(data), str(out), CompressOptions(
        progress=False, target_psnr=target))
    rows = report(out)
    assert len({rows[n]["depth"] for n in rows}) > 1  # the depth is chosen per patch
    reached = 0
    for name in names:
        row = rows[name]
        blob = (out / f"{name}.vqz").read_bytes()
        got = real_psnr(codec, blob, patches[name])
        reaching = [w for w in ways[name] if w[1] >= target]
        if reaching:  # the smallest file that reaches the target, and it does
            assert len(blob) == min(w[0] for w in reaching)
            assert got >= target - 0.01
            reached += 1
        else:  # nothing reaches it: the best PSNR this model gives the patch
            assert got == pytest.approx(max(w[1] for w in ways[name]), abs=0.01)
        assert (int(row["depth"]), row["band_filter"]) in {(w[2], w[3]) for w in ways[name]
                                                           if w[0] == len(blob)}
    assert 0 < reached and figures["patches_reaching_target"] >= reached
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == {"psnr": target, "bpppb": None}
    assert manifest["band_filter"] == list(KINDS)
    assert main(["decompress", str(out), "-o", str(tmp_path / "dec")]) == 0  # per-file depth


def test_target_bpppb_gives_the_best_psnr_within_the_rate(setup, structured_ckpt, tmp_path):
    codec, data, patches = setup
    names = sorted(patches)[:6]
    ways = {n: [w for w in every_way(codec, patches[n]) if w[3] == "none"] for n in names}
    sizes = sorted(w[0] for n in names for w in ways[n])
    cap = sizes[len(sizes) // 2]  # some files fit, some do not
    rate = bpppb(bpp_coded(cap), 12)  # exactly the median file's rate: that file fits
    out = tmp_path / "rate"
    assert main(["compress", str(structured_ckpt), str(data), "-o", str(out), "--target-bpppb",
                 f"{rate!r}", "--band-filter", "none", "--no-progress"]) == 0
    rows = report(out)
    for name in names:
        row, fitting = rows[name], [w for w in ways[name] if w[0] <= cap]
        assert row["band_filter"] == "none"
        if fitting:  # the best PSNR among the files within the rate
            assert int(row["bytes"]) <= cap
            assert float(row["psnr"]) == pytest.approx(max(w[1] for w in fitting), abs=1e-3)
        else:  # none fits: the smallest file
            assert int(row["bytes"]) == min(w[0] for w in ways[name])


def test_resume_keeps_one_report_row_per_patch(setup, structured_ckpt, tmp_path):
    """A kill can leave files without rows (or rows of files an LMDB never committed): the
    resumed OUT has exactly one row per patch, and a patch without its row is coded again."""
    _, data, patches = setup
    out = tmp_path / "out"
    args = ["compress", str(structured_ckpt), str(data), "-o", str(out), "--no-progress",
            "--target-psnr", "30"]
    assert main(args) == 0
    lines = (out / "patches.csv").read_text().splitlines()
    names = sorted(patches)
    (out / f"{names[0]}.vqz").unlink()  # a file lost: its row must go
    kept = [ln for ln in lines if not ln.startswith(names[1] + ",")]  # a row lost
    (out / "patches.csv").write_text("\n".join(kept) + "\n")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest | {"complete": False}))
    assert main([*args, "--target-psnr", "31", "--resume"]) == 2  # another target: refused
    assert main([*args, "--resume"]) == 0
    with open(out / "patches.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["patch"] for r in rows) == names  # one row each, none twice
    redone = {r["patch"]: r for r in rows}
    for name in names[:2]:
        assert int(redone[name]["bytes"]) == (out / f"{name}.vqz").stat().st_size


@pytest.mark.parametrize("args, message", [
    (["--target-psnr", "30", "--target-bpppb", "0.1"], "not allowed with argument"),
    (["--target-psnr", "nan"], "outside 0..180"),
    (["--target-psnr", "200"], "outside 0..180"),
    (["--target-bpppb", "-1"], "must be a positive number"),
    (["--target-bpppb", "inf"], "must be a positive number"),
    (["--psnr-threshold", "x"], "not a number of dB"),
])
def test_bad_targets_are_refused_before_anything_runs(structured_ckpt, structured_data, tmp_path,
                                                      capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(structured_ckpt), str(structured_data[0]), "-o",
              str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
