"""JPEG 2000 through imagecodecs, BD-rate, and `vqae rd` outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from vqae.cli import main
from vqae.config import DataConfig
from vqae.data.source import DataSource
from vqae.rd import jpeg2000
from vqae.rd.bdrate import bd_rate, front, rate_at


@pytest.fixture(scope="module")
def patch(fake_patches):
    with DataSource(DataConfig(path=str(fake_patches))) as source:
        ds = source.dataset("all")
        x = ds[0]["image"].numpy()  # (12, 120, 120)
        return ds, x, ds.load_raw(ds.names[0], ds.s2_bands)


def test_jpeg2000_is_lossless_when_asked(patch):
    ds, x, raw = patch
    _, recon = jpeg2000.code_patch("stack", x, raw, ds.s2_bands, None, ds.flag)
    np.testing.assert_array_equal(recon, x)
    _, recon = jpeg2000.code_patch("bands", x, raw, ds.s2_bands, None, ds.flag)
    np.testing.assert_array_equal(recon, x)  # native bands, upsampled as the reader does


def test_jpeg2000_lower_quality_costs_fewer_bytes(patch):
    ds, x, raw = patch
    for mode in jpeg2000.MODES:
        sizes = [jpeg2000.code_patch(mode, x, raw, ds.s2_bands, q, ds.flag)[0] for q in (40, 70)]
        assert sizes[0] < sizes[1]


def test_bd_rate_of_a_curve_at_half_the_rate_is_minus_50_percent():
    anchor = [(r, 10 * np.log10(r) + 30) for r in (0.1, 0.2, 0.4, 0.8)]
    test = [(r / 2, q) for r, q in anchor]
    res = bd_rate(test, anchor)
    assert res.percent == pytest.approx(-50.0) and (res.low, res.high) == (anchor[0][1],
                                                                           anchor[-1][1])
    assert bd_rate([(1.0, 50.0), (2.0, 60.0)], anchor) is None  # no overlap
    assert bd_rate(test[:2], anchor[:2]).percent == pytest.approx(-50.0)  # 3 dB shared
    assert bd_rate([(0.1, 25.0), (0.2, 25.2)], anchor) is None  # a 0.2 dB sliver
    assert front([(1, 30), (2, 29), (3, 35)]) == [(1, 30), (3, 35)]
    assert rate_at(anchor, anchor[1][1]) == pytest.approx(0.2)
    assert rate_at(anchor, 80.0) is None


def test_bd_rate_within_a_window_averages_only_there():
    anchor = [(r, 10 * np.log10(r) + 30) for r in (0.1, 0.2, 0.4, 0.8)]  # 20-29 dB
    # half the anchor's rate below 24 dB, the same rate above
    test = [(r / 2 if q < 24 else r, q) for r, q in anchor]
    low = bd_rate(test, anchor, within=(0.0, 22.0))
    assert (low.low, low.high) == (anchor[0][1], 22.0)
    assert bd_rate(test, anchor, within=(26.1, 40.0)).percent == pytest.approx(0.0)
    assert bd_rate(test, anchor, within=(40.0, 50.0)) is None  # nothing shared there


def test_rd_writes_table_json_and_plot(tiny_ckpt, fake_patches, tmp_path, capsys):
    out = tmp_path / "rd"
    assert main(["rd", "--ckpt", str(tiny_ckpt), "--data", str(fake_patches), "--out", str(out),
                 "--max-patches", "2", "--jpeg2000-quality", "45", "60", "--no-progress"]) == 0
    assert (out / "rd.png").stat().st_size > 1000
    with open(out / "rd.csv") as f:
        rows = list(csv.DictReader(f))
    wanted = {"codec", "setting", "bpp_coded", "bpppb", "psnr", "ssim", "sam", "psnr/B02"}
    assert wanted <= set(rows[0])
    codecs = {r["codec"] for r in rows}
    assert {"tiny", "jpeg2000-bands", "jpeg2000-stack", "jpeg2000-best"} <= codecs
    assert [r["setting"] for r in rows if r["codec"] == "tiny"] == ["depth1", "depth2", "depth3"]
    result = json.loads((out / "rd.json").read_text())
    assert result["patches"] == 2 and "tiny" in result["bd_rate"]
    printed = capsys.readouterr().out
    assert "BD-rate tiny vs JPEG 2000" in printed
    # 2 of the 8 patches: the header, rd.json's data and rd.png's title say so
    data = f"the first 2 (--max-patches) of all 8 patches of {fake_patches}"
    assert printed.startswith(f"rate-distortion on {data}\n") and result["data"] == data
    lines = printed.splitlines()
    meaning = {"rate_vs_jpeg2000": "the bpppb / jpeg2000-best's bpppb at the same mean PSNR - 1",
               "psnr_vs_jpeg2000": "the mean PSNR - jpeg2000-best's at the same bpppb, in dB"}
    for column, words in meaning.items():
        (line,) = [line for line in lines if line.startswith(f"{column}: {words}")]
        first = next((r for r in result["rows"] if r.get(column) is not None), None)
        assert line.endswith("; empty in this run") if first is None else (
            f"; {first['codec']} {first['setting']}: {first[column]:.4f}, " in line)


def test_rd_front_joins_models_into_one_curve(tiny_ckpt, other_ckpt, fake_patches, tmp_path,
                                              capsys):
    out = tmp_path / "rd"
    args = ["rd", "--ckpt", str(tiny_ckpt), "--ckpt", str(other_ckpt), "--data",
            str(fake_patches), "--out", str(out), "--max-patches", "2", "--jpeg2000-quality",
            "50", "--no-progress"]
    assert main([*args, "--front", "vqae"]) == 0
    result = json.loads((out / "rd.json").read_text())
    rows = result["rows"]
    models = [(r["bpppb"], r["psnr"]) for r in rows if r["codec"] in ("tiny", "other")]
    joined = [r for r in rows if r["codec"] == "vqae"]
    assert [(r["bpppb"], r["psnr"]) for r in joined] == front(models)
    assert all(r["setting"].split()[0] in ("tiny", "other") for r in joined)
    assert "vqae" in result["bd_rate"] and "BD-rate vqae vs JPEG 2000" in capsys.readouterr().out
    assert main([*args, "--front", "jpeg2000-best", "--overwrite"]) == 2
    assert "--front jpeg2000-best is already a curve's name" in capsys.readouterr().err


def test_rd_band_filters_give_each_model_a_curve_per_filter(tiny_ckpt, fake_patches, tmp_path):
    out = tmp_path / "rd"
    assert main(["rd", "--ckpt", str(tiny_ckpt), "--data", str(fake_patches), "--out", str(out),
                 "--max-patches", "3", "--jpeg2000-quality", "50", "--band-filter", "none",
                 "gain", "mix", "--bd-range", "0", "100", "--no-progress"]) == 0
    result = json.loads((out / "rd.json").read_text())
    rows = {(r["codec"], r["setting"]): r for r in result["rows"]}
    names = {"tiny+none", "tiny+gain", "tiny+mix"}
    assert set(result["checkpoints"]) == names and names <= set(result["bd_rate"])
    for name in names:  # the window holds every PSNR here: the same BD-rate, if any
        bd = result["bd_rate"][name]
        assert bd["window"]["asked"] == [0, 100] and bd["window"]["percent"] == bd["percent"]
    for d in (1, 2, 3):
        plain, gain, mix = (rows[f"tiny+{k}", f"depth{d}"] for k in ("none", "gain", "mix"))
        assert gain["bytes"] - plain["bytes"] == 3 * 12  # a u8 gain per band and patch
        assert mix["bytes"] - plain["bytes"] == 3 * 144  # an int8 per band pair and patch
        assert gain["psnr"] >= plain["psnr"] - 1e-3  # least-squares filters never add error
        assert mix["psnr"] >= gain["psnr"] - 0.05  # a superset of gains, both on a lattice


def test_rd_reports_pooled_and_worst_patches(tiny_ckpt, fake_patches, tmp_path, capsys):
    out = tmp_path / "rd"
    assert main(["rd", "--ckpt", str(tiny_ckpt), "--data", str(fake_patches), "--out", str(out),
                 "--max-patches", "3", "--jpeg2000-quality", "40", "50", "60",
                 "--psnr-threshold", "35", "--no-progress"]) == 0
    result = json.loads((out / "rd.json").read_text())
    with open(out / "rd_patches.csv") as f:
        patches = list(csv.DictReader(f))
    assert result["psnr_threshold"] == 35 and "tiny" in result["bd_rate_pooled"]
    printed = capsys.readouterr().out
    assert "BD-rate tiny vs JPEG 2000 (mean" in printed
    assert "BD-rate tiny vs JPEG 2000 (pooled" in printed
    for row in result["rows"]:
        if row["codec"] == "jpeg2000-best":
            continue
        mine = [p for p in patches if (p["codec"], p["setting"]) == (row["codec"], row["setting"])]
        assert len(mine) == row["patches"] == 3  # a row per patch and point
        psnrs = np.array([float(p["psnr"]) for p in mine])
        assert sum(int(p["bytes"]) for p in mine) == row["bytes"]
        assert row["psnr"] == pytest.approx(psnrs.mean(), abs=1e-3)
        assert row["psnr_min"] == pytest.approx(psnrs.min(), abs=1e-3)
        assert row["psnr_p10"] == pytest.approx(psnrs.min(), abs=0.01)  # ceil(0.3): the 1st
        assert row["patches_below"] == int((psnrs < 35).sum())
        # pooled MSE from the per-patch PSNRs: every pixel weighs the same
        pooled = 10 * np.log10(1e8 / np.mean(1e8 / 10 ** (psnrs / 10)))
        assert row["psnr_pooled"] == pytest.approx(pooled, abs=1e-3)
        assert row["psnr_pooled"] <= row["psnr"] + 1e-9
    with open(out / "rd.csv") as f:
        assert {"psnr_pooled", "psnr_p10", "psnr_min", "patches_below"} <= set(
            next(csv.DictReader(f)))
    from PIL import Image

    width, height = Image.open(out / "rd.png").size
    assert width > 1.8 * height  # two panels side by side: mean and pooled


def test_rd_target_psnr_codes_each_patch_to_its_target(tiny_ckpt, fake_patches, tmp_path):
    out = tmp_path / "rd"
    args = ["rd", "--ckpt", str(tiny_ckpt), "--data", str(fake_patches), "--out", str(out),
            "--max-patches", "4", "--jpeg2000-quality", "50", "--band-filter", "none", "gain",
            "--no-progress"]
    assert main(args) == 0
    with open(out / "rd_patches.csv") as f:
        plain = list(csv.DictReader(f))
    model = [p for p in plain if p["codec"].startswith("tiny+")]
    psnrs = sorted(float(p["psnr"]) for p in model)
    target = psnrs[len(psnrs) // 2]  # reached by some ways of coding some patches, not all
    assert main([*args, "--target-psnr", f"{target:.4f}", "--overwrite"]) == 0
    result = json.loads((out / "rd.json").read_text())
    with open(out / "rd_patches.csv") as f:
        rows = list(csv.DictReader(f))
    setting = f"psnr{float(f'{target:.4f}'):g}"
    chosen = {p["patch"]: p for p in rows if p["codec"] == "tiny+target"}
    assert len(chosen) == 4 and {p["setting"] for p in chosen.values()} == {setting}
    for name, p in chosen.items():
        ways = [q for q in rows if q["patch"] == name and q["codec"] in ("tiny+none",
                                                                         "tiny+gain")]
        reaching = [q for q in ways if float(q["psnr"]) >= float(f"{target:.4f}")]
        if reaching:  # the smallest file that reaches the target
            assert int(p["bytes"]) == min(int(q["bytes"]) for q in reaching)
            assert float(p["psnr"]) >= float(f"{target:.4f}")
        else:  # none reaches it: the best this model does
            assert float(p["psnr"]) == max(float(q["psnr"]) for q in ways)
        depth, kind = p["coded_as"].split()
        twin = [q for q in ways if q["codec"] == f"tiny+{kind}" and q["setting"] == depth]
        assert twin and (twin[0]["bytes"], twin[0]["psnr"]) == (p["bytes"], p["psnr"])
    jpeg = [p for p in rows if p["codec"] == "jpeg2000-target"]
    assert len(jpeg) == 4 and all(float(p["psnr"]) >= float(f"{target:.4f}") for p in jpeg)
    by_key = {(r["codec"], r["setting"]): r for r in result["rows"]}
    mine, theirs = by_key["tiny+target", setting], by_key["jpeg2000-target", setting]
    assert mine["target"] == theirs["target"]
    assert mine["rate_vs_jpeg2000"] == pytest.approx(mine["bpppb"] / theirs["bpppb"] - 1)
    assert "tiny+target" not in result["bd_rate"]  # compared at equal target, not by BD-rate


def test_jpeg2000_to_target_is_the_cheapest_level_that_reaches_it(patch):
    from vqae.metrics import psnr
    from vqae.rd.targets import jpeg2000_to_target

    ds, x, raw = patch
    for target in (35.0, 45.0):
        choice, recon = jpeg2000_to_target(x, raw, ds.s2_bands, ds.flag, 0.0, target)
        assert choice.psnr >= target and choice.psnr == pytest.approx(
            float(psnr(torch.from_numpy(x)[None], torch.from_numpy(recon)[None])), abs=1e-4)
        mode, _, level = choice.setting.split()
        cheaper = jpeg2000.code_patch(mode, x, raw, ds.s2_bands, float(level) - 0.5, ds.flag)
        assert cheaper[0] <= choice.bytes  # a lower level is no larger ...
        assert float(psnr(torch.from_numpy(x)[None], torch.from_numpy(cheaper[1])[None])) < \
            target + 0.5  # ... and no longer safely above the target


def test_jpeg2000_to_target_goes_below_the_usual_levels_where_the_clamp_hides_error(patch):
    """Snow above 10000 DN: DESIGN.md's PSNR clamps it, so a level far under target + 16 dB
    reaches the target; the search must find about the cheapest one a scan finds."""
    from vqae.metrics import psnr
    from vqae.rd.targets import jpeg2000_to_target

    ds, x, raw = patch
    bright = (x - x.min()) / (x.max() - x.min()) * 30000 + 9000  # 90% above the clamp
    bright_raw = {b: (raw[b].astype(np.float64) - x.min()) / (x.max() - x.min()) * 30000 + 9000
                  for b in raw}
    bright_raw = {b: v.astype(np.uint16) for b, v in bright_raw.items()}
    bright = bright.astype(np.uint16).astype(np.float32)
    target = 40.0
    choice, _ = jpeg2000_to_target(bright, bright_raw, ds.s2_bands, ds.flag, 0.0, target)
    scan = []
    for level in range(1, 101):
        n, recon = jpeg2000.code_patch("stack", bright, bright_raw, ds.s2_bands, float(level),
                                       ds.flag)
        if float(psnr(torch.from_numpy(bright)[None], torch.from_numpy(recon)[None])) >= target:
            scan.append(n)
    assert choice.psnr >= target and choice.bytes <= 1.15 * min(scan)


def test_psnr_at_interpolates_in_log_rate_and_never_extrapolates():
    from vqae.rd.bdrate import psnr_at, shared_span

    anchor = [(0.1, 20.0), (0.4, 30.0), (0.3, 25.0)]  # unsorted; (0.3, 25) on the front
    assert psnr_at(anchor, 0.2) == pytest.approx(20.0 + 5.0 * np.log10(2) / np.log10(3))
    assert psnr_at(anchor, 0.4) == 30.0
    assert psnr_at(anchor, 0.05) is None and psnr_at(anchor, 0.5) is None
    assert shared_span([(0.2, 24.0)], anchor) == 0.0  # one point spans nothing
    assert shared_span([(0.2, 22.0), (0.3, 40.0)], anchor) == pytest.approx(8.0)


def jpeg2000_rows() -> list[dict]:
    """Rows of both modes as `vqae rd` measures them: bands far below stack at q34."""
    from vqae.rd.report import best_jpeg2000

    rows = [{"codec": f"jpeg2000-{mode}", "setting": q, "bpppb": rate, "psnr": quality,
             "psnr_pooled": quality - 1.0, "psnr_min": quality - 5.0}
            for mode, q, rate, quality in [("bands", "q34", 0.09, 12.8), ("bands", "q70", 0.9, 51.0),
                                           ("stack", "q34", 0.026, 18.7),
                                           ("stack", "q70", 1.0, 50.0)]]
    return rows + best_jpeg2000(rows)


def test_a_point_without_bd_rate_is_compared_at_its_rate_or_said_outside():
    from vqae.rd.report import add_equal_rate_psnrs, bd_rates, describe_bd

    rows = jpeg2000_rows() + [{"codec": "m", "setting": "depth1", "bpppb": 0.1, "psnr": 40.0,
                               "psnr_pooled": 39.0},
                              {"codec": "m", "setting": "depth2", "bpppb": 0.01, "psnr": 42.0,
                               "psnr_pooled": 41.0}]
    add_equal_rate_psnrs(rows, ["m"])
    # the best JPEG 2000 front: stack q34 (0.026, 18.7), bands q70 (0.9, 51.0)
    expected = 18.7 + (51.0 - 18.7) * np.log10(0.1 / 0.026) / np.log10(0.9 / 0.026)
    model = [r for r in rows if r["codec"] == "m"]
    assert model[0]["jpeg2000_psnr_same_bpppb"] == pytest.approx(expected)
    assert model[0]["psnr_vs_jpeg2000"] == pytest.approx(40.0 - expected)
    assert model[1]["jpeg2000_psnr_same_bpppb"] is None and model[1]["psnr_vs_jpeg2000"] is None
    pooled = 17.7 + (50.0 - 17.7) * np.log10(0.1 / 0.026) / np.log10(0.9 / 0.026)
    assert model[0]["psnr_pooled_vs_jpeg2000"] == pytest.approx(39.0 - pooled)
    bd = bd_rates(rows, ["m"])["m"]
    assert bd["percent"] is None and bd["shared_db"] == 0.0  # 40-42 dB vs JPEG 2000's 18.7-51
    lines = describe_bd("m", bd)
    assert lines[0].startswith("BD-rate m vs JPEG 2000 (mean): none, the PSNR ranges share "
                               "0.00 dB and a BD-rate needs 0.5")
    assert lines[1] == (f"  depth1 at 0.1 bpppb: model 40.00 dB, JPEG 2000 {expected:.2f} dB, "
                        f"gain {40.0 - expected:+.2f} dB")
    assert lines[2] == ("  depth2 at 0.01 bpppb: model 42.00 dB, below every rate JPEG 2000 "
                        "measured (not extrapolated); its cheapest point, 0.026 bpppb at 18.70 "
                        "dB: the model +23.30 dB at 0.38x its rate")
    model[0]["bpppb"] = 2.0  # past JPEG 2000's costliest point (0.9 bpppb, 51 dB)
    lines = describe_bd("m", bd_rates(rows, ["m"])["m"])
    assert lines[1].endswith("above every rate JPEG 2000 measured (not extrapolated); its "
                             "costliest point, 0.9 bpppb at 51.00 dB: the model -11.00 dB at "
                             "2.22x its rate")


def test_jpeg2000_points_off_the_best_front_are_explained_where_printed():
    from vqae.rd.report import beaten_modes

    lines = beaten_modes(jpeg2000_rows())
    assert len(lines) == 2
    assert lines[0].startswith("jpeg2000-bands q34: off jpeg2000-best, beaten for fewer bits "
                               "(its lowest, q34: 0.0900 bpppb at 12.8 dB, worst patch 7.8 dB; "
                               "jpeg2000-best takes stack q34 there: 0.0260 bpppb at 18.7 dB)")
    assert "one OpenJPEG level" in lines[0]
    assert lines[1].startswith("jpeg2000-stack q70: off jpeg2000-best")  # bands q70 beats it
    from vqae.rd.report import best_jpeg2000

    stack = [r for r in jpeg2000_rows() if r["codec"] == "jpeg2000-stack"]
    assert beaten_modes(stack + best_jpeg2000(stack)) == []  # nothing off the front


def test_rd_compares_a_single_depth_model_at_its_rate(single_depth_ckpt, fake_patches, tmp_path,
                                                      capsys):
    from vqae.rd.bdrate import psnr_at

    out = tmp_path / "rd"
    assert main(["rd", "--ckpt", str(single_depth_ckpt), "--data", str(fake_patches), "--out",
                 str(out), "--max-patches", "2", "--jpeg2000-quality", "20", "30", "40", "50",
                 "60", "70", "80", "90", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "rd.json").read_text())
    (model,) = [r for r in result["rows"] if r["codec"] == "single"]
    for axis, key in (("psnr", "bd_rate"), ("psnr_pooled", "bd_rate_pooled")):
        anchor = [(r["bpppb"], r[axis]) for r in result["rows"]
                  if r["codec"] in ("jpeg2000-bands", "jpeg2000-stack")]
        theirs = psnr_at(anchor, model["bpppb"])
        assert theirs is not None, "the JPEG 2000 sweep must bracket the model's rate"
        bd = result[key]["single"]
        assert bd["percent"] is None and bd["same_bpppb"] == [{
            "setting": "depth1", "bpppb": model["bpppb"], "psnr": model[axis],
            "jpeg2000_psnr": pytest.approx(theirs), "gain_db": pytest.approx(model[axis] - theirs)}]
        assert model[f"{axis}_vs_jpeg2000"] == pytest.approx(model[axis] - theirs)
        what = "mean" if axis == "psnr" else "pooled"
        assert (f"BD-rate single vs JPEG 2000 ({what}): none, the PSNR ranges share 0.00 dB"
                in printed)
        assert (f"  depth1 at {model['bpppb']:.4g} bpppb: model {model[axis]:.2f} dB, JPEG 2000 "
                f"{theirs:.2f} dB, gain {model[axis] - theirs:+.2f} dB") in printed
    with open(out / "rd.csv") as f:
        assert {"psnr_vs_jpeg2000", "jpeg2000_psnr_pooled_same_bpppb"} <= set(
            next(csv.DictReader(f)))


def test_rd_png_spans_every_curve_with_a_colour_per_model_and_a_style_per_filter(
        tiny_ckpt, other_ckpt, fake_patches, tmp_path):
    from vqae.rd.plot import KIND_NAMES, draw_rd

    out = tmp_path / "rd"
    assert main(["rd", "--ckpt", str(tiny_ckpt), "--ckpt", str(other_ckpt), "--data",
                 str(fake_patches), "--out", str(out), "--max-patches", "2",
                 "--jpeg2000-quality", "30", "80", "--band-filter", "none", "gain",
                 "--no-progress"]) == 0
    result = json.loads((out / "rd.json").read_text())
    labels = list(result["checkpoints"])
    fig = draw_rd(result["rows"], labels, result["data"])
    for ax in fig.axes[:2]:
        assert ax.get_xscale() == "log"
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        for line in ax.get_lines():  # JPEG 2000 included, far past the models' rates
            assert x0 < min(line.get_xdata()) and max(line.get_xdata()) < x1, line.get_label()
            assert y0 < min(line.get_ydata()) and max(line.get_ydata()) < y1, line.get_label()
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(labels) <= set(lines)
        colour = {name: lines[name].get_color() for name in labels}
        style = {name: lines[name].get_linestyle() for name in labels}
        assert colour["tiny+none"] == colour["tiny+gain"] != colour["other+none"]
        assert colour["other+none"] == colour["other+gain"]
        assert style["tiny+none"] == style["other+none"] != style["tiny+gain"]
        marker = {name: lines[name].get_marker() for name in labels}  # a dot needs it
        assert marker["tiny+none"] == marker["other+none"] != marker["tiny+gain"]
    legend = fig.axes[1].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["jpeg2000-bands", "jpeg2000-stack", "jpeg2000-best", "tiny", "other",
                     KIND_NAMES["none"], KIND_NAMES["gain"]]  # M + K rows, not M x K
    handles = dict(zip(texts, legend.legend_handles))
    assert handles["tiny"].get_color() == colour["tiny+gain"]
    assert handles[KIND_NAMES["gain"]].get_linestyle() == style["tiny+gain"]
    assert handles[KIND_NAMES["gain"]].get_marker() == marker["tiny+gain"]
