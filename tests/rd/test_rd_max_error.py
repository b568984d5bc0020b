"""`vqae rd --max-error`: near-lossless and lossless points of a model with a residual model,
beside the classical anchors on the same native bands; without the option, today's outputs."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from tests.codec.conftest import structured_ckpt, structured_data  # noqa: F401 (fixtures)
from vqae.cli import main
from vqae.config import DataConfig
from vqae.data.source import DataSource
from vqae.metrics import PSNR_MAX
from vqae.rd.lossless_anchors import CODECS, anchor_rows, anchor_table, offers

ERRORS = (0, 2)
PATCHES = 2


@pytest.fixture(scope="module")
def enhanced_ckpt(structured_ckpt, structured_data, tmp_path_factory):  # noqa: F811
    """The structured model with a residual model fitted by `vqae fit-residual` (few steps)."""
    out = tmp_path_factory.mktemp("residual") / "enhanced.pt"
    lmdb, _ = structured_data
    assert main(["fit-residual", str(structured_ckpt), "--data", str(lmdb), "--split", "all",
                 "--patches", "4", "--steps", "40", "-o", str(out)]) == 0
    return out


def rd_args(ckpt, lmdb, out) -> list[str]:
    return ["rd", "--ckpt", str(ckpt), "--data", str(lmdb), "--split", "all", "--out", str(out),
            "--max-patches", str(PATCHES), "--jpeg2000-quality", "50", "70", "--no-progress"]


@pytest.fixture(scope="module")
def near_run(enhanced_ckpt, structured_data, tmp_path_factory):  # noqa: F811
    """One `vqae rd --max-error 0 2` run: (its OUT, what it printed)."""
    lmdb, _ = structured_data
    out = tmp_path_factory.mktemp("rd-near") / "rd"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*rd_args(enhanced_ckpt, lmdb, out), "--max-error",
                     *map(str, ERRORS)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def codec(enhanced_ckpt):
    from vqae.codec.codec import Codec

    return Codec.from_checkpoint(enhanced_ckpt, device="cpu")


@pytest.fixture(scope="module")
def natives(structured_data, codec):  # noqa: F811
    """The run's patches as {band: native uint16}: the first PATCHES of split all."""
    lmdb, _ = structured_data
    with DataSource(DataConfig(path=str(lmdb))) as source:
        ds = source.dataset("all")
        return {n: ds.load_raw(n, list(codec.bands)) for n in ds.names[:PATCHES]}


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_near_lossless_table_has_every_codec_and_max_error(near_run):
    out, printed = near_run
    rows = read_csv(out / "near_lossless.csv")
    by_key = {(r["codec"], int(r["max_error"])): r for r in rows}
    assert len(by_key) == len(rows)
    for e in ERRORS:
        model = by_key["vqae enhanced", e]
        assert int(model["patches"]) == PATCHES
        assert 0 <= int(model["measured_max_error"]) <= e
        jpegls = float(by_key["jpegls", e]["bpppb"])
        assert float(model["rate_vs_jpegls"]) == pytest.approx(float(model["bpppb"]) / jpegls
                                                               - 1, rel=1e-6)
        for codec in CODECS:
            assert ((codec, e) in by_key) == offers(codec, e), (codec, e)
    lossless = by_key["vqae enhanced", 0]
    assert int(lossless["measured_max_error"]) == 0
    assert float(lossless["psnr"]) == float(lossless["psnr_pooled"]) == pytest.approx(PSNR_MAX)
    best = min((r for r in rows if r["codec"] in CODECS and r["max_error"] == "0"),
               key=lambda r: float(r["bpppb"]))
    assert lossless["best_lossless"] == best["codec"]
    assert float(lossless["rate_vs_best_lossless"]) == pytest.approx(
        float(lossless["bpppb"]) / float(best["bpppb"]) - 1, rel=1e-6)
    assert float(by_key["vqae enhanced", 2]["psnr"]) < PSNR_MAX
    assert "rate_vs_jpegls: the bpppb / jpegls's at the same max_error - 1" in printed
    assert printed.rstrip().splitlines()[-1].startswith("wrote rd.csv")
    assert "near_lossless.csv into" in printed
    result = json.loads((out / "rd.json").read_text())
    assert result["max_errors"] == list(ERRORS)
    assert [(r["codec"], r["max_error"]) for r in result["near_lossless"]] == list(by_key)


def test_anchor_bits_are_lossless_anchors_own_on_the_same_patches(near_run, natives):
    out, _ = near_run
    rows = {(r["codec"], int(r["max_error"])): r for r in read_csv(out / "near_lossless.csv")}
    for theirs in anchor_table(natives.values(), ERRORS):
        mine = rows[theirs["codec"], theirs["max_error"]]
        assert float(mine["bpppb"]) == pytest.approx(theirs["bpppb"], rel=1e-9)
        assert int(mine["measured_max_error"]) == theirs["measured_max_error"]
        assert int(mine["patches"]) == theirs["patches"] == PATCHES
    patches = read_csv(out / "rd_patches.csv")
    for name, native in natives.items():  # and each patch's row in rd_patches.csv
        for theirs in anchor_rows(name, native, ERRORS):
            (mine,) = [p for p in patches if (p["codec"], p["patch"], p["setting"]) == (
                theirs["codec"], name, f"maxerr{theirs['max_error']}")]
            assert 8 * int(mine["bytes"]) == theirs["bits"]
            assert int(mine["max_abs_error"]) == theirs["measured_max_error"]


def test_every_patch_row_carries_its_max_abs_error(near_run, natives, codec):
    from vqae.rd.near_lossless import max_abs_error

    out, _ = near_run
    patches = read_csv(out / "rd_patches.csv")
    assert list(patches[0])[-2:] == ["max_error", "max_abs_error"]
    for p in patches:
        if p["codec"] == "jpeg2000-stack":  # it decodes the upsampled grid, no native bands
            assert p["max_abs_error"] == ""
        else:
            assert int(p["max_abs_error"]) >= 0, p
    enhanced = [p for p in patches if p["codec"] == "vqae enhanced"]
    assert sorted((p["setting"], p["max_error"]) for p in enhanced) == sorted(
        (f"maxerr{e}", str(e)) for e in ERRORS for _ in range(PATCHES))
    assert all(int(p["max_abs_error"]) <= int(p["max_error"]) for p in enhanced)
    # a lossy row: the error of the same file through `vqae decompress --native`
    name, native = next(iter(natives.items()))
    data = codec.compress(native, codec.depth, "gain")
    (row,) = [p for p in patches if (p["codec"], p["setting"], p["patch"]) == (
        "enhanced", f"depth{codec.depth}", name)]
    assert int(row["bytes"]) == len(data) and row["max_error"] == ""
    back = codec.decompress(data, native=True)
    assert int(row["max_abs_error"]) == max_abs_error(native, back) > 2


def test_rd_png_continues_each_curve_and_keeps_the_lossless_point_on_the_axis(near_run):
    from vqae.rd.plot import CEILING_DB, NEAR_GID, NEAR_NAME, draw_rd

    out, _ = near_run
    result = json.loads((out / "rd.json").read_text())
    fig = draw_rd(result["rows"], list(result["checkpoints"]), result["data"],
                  near=result["near_lossless"])
    near = {r["max_error"]: r for r in result["near_lossless"] if r["codec"] == "vqae enhanced"}
    for ax, axis in zip(fig.axes[:2], ("psnr", "psnr_pooled")):
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        for line in ax.get_lines():
            assert x0 < min(line.get_xdata()) and max(line.get_xdata()) < x1, line.get_label()
            assert y0 < min(line.get_ydata()) and max(line.get_ydata()) < y1, line.get_label()
        finite = [r[axis] for r in result["rows"]] + [near[2][axis]]
        ceiling = max(finite) + CEILING_DB
        assert y1 < ceiling + 10 < PSNR_MAX  # the axis stays on the finite PSNRs
        ours = [line for line in ax.get_lines() if line.get_gid() == NEAR_GID]
        lossless = [line for line in ours if list(line.get_xdata()) == [near[0]["bpppb"]]]
        assert len(lossless) == 1 and lossless[0].get_ydata()[0] == pytest.approx(ceiling)
        (curve,) = [line for line in ours if len(line.get_xdata()) > 1]  # on from the model's
        model = {line.get_label(): line for line in ax.get_lines()}["enhanced"]
        assert curve.get_color() == model.get_color() == lossless[0].get_color()
        assert curve.get_xdata()[0] == max(model.get_xdata())
        assert curve.get_xdata()[-1] == near[2]["bpppb"] and curve.get_marker() == "*"
        assert any(t.get_text().startswith("lossless") for t in ax.texts)
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert NEAR_NAME in texts and texts.count("enhanced") == 1


def test_rd_refuses_max_error_without_a_residual_model(structured_ckpt, structured_data,  # noqa: F811
                                                       tmp_path, capsys):
    lmdb, _ = structured_data
    out = tmp_path / "rd"
    assert main([*rd_args(structured_ckpt, lmdb, out), "--max-error", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fit-residual" in err and str(structured_ckpt) in err
    assert not out.exists()


def test_without_max_error_the_outputs_are_todays(near_run, enhanced_ckpt, structured_data,  # noqa: F811
                                                  tmp_path):
    from vqae.rd.measure import OUTPUTS, PatchLog

    lmdb, _ = structured_data
    out = tmp_path / "rd"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(rd_args(enhanced_ckpt, lmdb, out)) == 0
    names = {p.name for p in out.iterdir()}
    assert set(OUTPUTS) <= names and "near_lossless.csv" not in names
    result = json.loads((out / "rd.json").read_text())
    assert "near_lossless" not in result and "max_errors" not in result
    assert all("max_abs_error" not in r for r in result["rows"])
    plain = read_csv(out / "rd_patches.csv")
    assert tuple(plain[0]) == PatchLog.COLUMNS
    # the same measurements as the --max-error run: its rows less the enhanced and the anchors
    near = read_csv(near_run[0] / "rd_patches.csv")
    kept = [{k: p[k] for k in PatchLog.COLUMNS} for p in near
            if p["codec"] not in {"vqae enhanced", *CODECS}]
    assert kept == plain
    assert (out / "rd.csv").read_text() == (near_run[0] / "rd.csv").read_text()


def test_rd_targets_go_through_the_layer_so_every_patch_reaches_them(
        enhanced_ckpt, structured_data, tmp_path):  # noqa: F811
    lmdb, _ = structured_data
    out = tmp_path / "rd"
    assert main([*rd_args(enhanced_ckpt, lmdb, out), "--target-psnr", "55"]) == 0
    rows = [r for r in read_csv(out / "rd.csv") if r["codec"].endswith("+target")]
    assert rows and all(r["patches_reaching_target"] == r["patches"] for r in rows)
    assert all(float(r["psnr_min"]) >= 55 for r in rows)
