"""`vqae rd --scene`: the report over a real scene's tiles against JPEG 2000 on whole bands."""

from __future__ import annotations

import csv
import json

from vqae.cli import main


def test_the_scene_report_has_every_depth_jpeg2000_bd_rates_and_a_picture(
        scene_ckpt, real_scene, tmp_path, capsys):
    out = tmp_path / "rd"
    assert main(["rd", "--scene", "--ckpt", str(scene_ckpt), "--data", str(real_scene),
                 "--out", str(out), "--jpeg2000-quality", "40", "50", "60"]) == 0
    rows = list(csv.DictReader(open(out / "scene_rd.csv")))
    names = [r["codec"] for r in rows]
    assert names[:6:2] == ["vqae depth 1", "vqae depth 2", "vqae depth 3"]
    assert names[1] == "vqae depth 1 (native files)"
    assert names[6:] == ["jpeg2000 q40", "jpeg2000-stack q40", "jpeg2000 q50",
                         "jpeg2000-stack q50", "jpeg2000 q60", "jpeg2000-stack q60"]
    for r in rows:
        mean, pooled, p10, low = (float(r[k]) for k in
                                  ("psnr", "psnr_pooled", "psnr_p10", "psnr_min"))
        assert low <= p10 <= mean and low <= pooled and float(r["bpppb"]) > 0
    ours = [float(r["bpppb"]) for r in rows[:6:2]]
    assert ours == sorted(ours)  # each stage adds bits
    report = json.loads((out / "scene_rd.json").read_text())
    assert report["tiles"] == 2 * 3 and set(report["bd_rate"]) == {
        "vqae psnr", "vqae psnr_pooled", "vqae native files psnr", "vqae native files psnr_pooled"}
    assert (out / "region.png").stat().st_size > 10_000
    assert "BD-rate" in capsys.readouterr().out
