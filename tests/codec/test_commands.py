"""`vqae fit-prior`, `vqae compress`, `vqae decompress` end to end on tiny models and data.

Tests of decoded pixels run on `structured_ckpt` (bands with real structure) and check it with
`assert_structured`: on the untrained `tiny_ckpt` several bands decode to one value, and any two
decodings of such a band compare equal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch

from tests.codec.conftest import assert_coarser, assert_structured
from tests.data.encode_helpers import one_line_error, read_lmdb
from vqae.checkpoint.manager import load_checkpoint, load_model, save_checkpoint
from vqae.cli import main
from vqae.codec import bandfilter
from vqae.codec.codec import Codec, band_arrays
from vqae.data.bands import NATIVE_SIZE, S2_BANDS
from vqae.data.source import DataSource


def vqae(*args) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def read_tiffs(folder, patch, bands):
    out = {}
    for band in bands:
        with rasterio.open(folder / patch / f"{patch}_{band}.tif") as src:
            out[band] = src.read(1)
    return out


def patches_in(folder) -> list[str]:
    return sorted(f.name[:-4] for f in folder.glob("*.vqz"))


def reference_decode(ckpt, file) -> tuple[str, dict[str, np.ndarray]]:
    """What `vqae decompress` should write for a .vqz file of a model with global statistics,
    computed apart from it: the file's indices and band filter, model.decode (batch of one,
    fp32), the filter applied, rounded half to even, clamped to uint16 -> (filter kind,
    band -> (120, 120) uint16). The pixel tests' only use of the codec's Python API."""
    model, _ = load_model(ckpt)
    grid, header = Codec(model, str(ckpt)).parse(file.read_bytes(), source=str(file))
    with torch.no_grad():
        dn = model.decode(torch.from_numpy(grid)[None]).numpy()  # (1, C, 120, 120) fp32
    dn = bandfilter.apply(dn, None, header.filter_kind, np.array([header.filter_codes]))[0]
    want = np.clip(np.rint(dn), 0, 65535).astype(np.uint16)  # (C, 120, 120)
    return header.filter_kind, dict(zip(model.bands, want))


@pytest.fixture(scope="module")
def compressed(tiny_ckpt, fake_patches, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqz") / "out"
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out) == 0
    return out


@pytest.fixture(scope="module")
def structured(structured_ckpt, structured_data, tmp_path_factory):
    """structured_ckpt's full-depth files (default band filter) of the pixel tests' patches."""
    data, pick = structured_data
    out = tmp_path_factory.mktemp("vqz") / "structured"
    assert vqae("compress", structured_ckpt, data, *pick, "-o", out) == 0
    return out


def test_fit_prior_writes_into_the_checkpoint(tiny_ckpt, fake_patches, tmp_path, capsys):
    raw = tmp_path / "raw.pt"
    shutil.copy(tiny_ckpt, raw)
    state = load_checkpoint(raw)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("prior.")}
    save_checkpoint(raw, state)
    assert vqae("fit-prior", raw, "--data", fake_patches, "--split", "all", "-o",
                tmp_path / "fitted.pt") == 0
    assert "bits/index" in capsys.readouterr().out
    assert bool(load_model(tmp_path / "fitted.pt")[0].prior.fitted)
    assert vqae("fit-prior", raw, "--data", fake_patches, "--split", "all") == 0  # in place
    assert bool(load_model(raw)[0].prior.fitted)


def test_compress_files_manifest_and_overwrite(tiny_ckpt, fake_patches, compressed, tmp_path):
    files = sorted(compressed.glob("*.vqz"))
    assert len(files) == 8 and (compressed / "manifest.json").is_file()
    out = tmp_path / "again"
    shutil.copytree(compressed, out)
    (out / "stale.vqz").write_bytes(b"old")
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--overwrite", "--depth",
                "1") == 0
    assert sorted(p.name for p in out.glob("*.vqz")) == [f.name for f in files]
    assert all(len(f.read_bytes()) < len((compressed / f.name).read_bytes())
               for f in out.glob("*.vqz"))


def test_decompressed_pixels_equal_model_decode_to_the_last_dn(structured_ckpt, structured,
                                                              tmp_path):
    assert vqae("decompress", structured, "-o", tmp_path / "dec") == 0
    for file in sorted(structured.glob("*.vqz")):
        patch = file.name[:-4]
        kind, want = reference_decode(structured_ckpt, file)
        assert kind == "gain"  # the default band filter
        got = read_tiffs(tmp_path / "dec", patch, want)
        assert_structured(got, patch)
        for band in want:
            assert got[band].dtype == np.uint16
            np.testing.assert_array_equal(got[band], want[band], err_msg=band)


def test_without_a_band_filter_a_depth_prefix_decodes_like_a_shallow_file(
        structured_ckpt, structured_data, tmp_path):
    data, pick = structured_data
    for name, depth in (("full", []), ("d1", ["--depth", "1"])):
        assert vqae("compress", structured_ckpt, data, *pick, "-o", tmp_path / name,
                    "--band-filter", "none", *depth) == 0
    assert vqae("decompress", tmp_path / "d1", "-o", tmp_path / "shallow") == 0
    assert vqae("decompress", tmp_path / "full", "-o", tmp_path / "prefix", "--depth", "1") == 0
    assert vqae("decompress", tmp_path / "full", "-o", tmp_path / "deep") == 0
    for patch in patches_in(tmp_path / "full"):
        check_prefix(tmp_path, patch, full="deep", prefix="prefix", same="shallow")


def check_prefix(root, patch: str, full: str, prefix: str, same: str) -> None:
    """The decoding in folder `prefix` is structured, coarser than `full`'s, equal to `same`'s."""
    full, prefix, same = (read_tiffs(root / d, patch, S2_BANDS) for d in (full, prefix, same))
    assert_structured(prefix, patch)
    assert_coarser(full, prefix, patch)
    for band in S2_BANDS:
        np.testing.assert_array_equal(same[band], prefix[band], err_msg=band)


def test_a_depth_prefix_and_a_cut_file_decode_alike_with_the_full_files_filter(
        structured_ckpt, structured_data, structured, tmp_path):
    """`decompress --depth 1` of a full file and that file cut after its first chunk decode the
    same, coarser than full depth. The file of `compress --depth 1` holds the same indices, but
    its band filter is the one fitted at one stage, so its pixels differ."""
    data, pick = structured_data
    assert vqae("compress", structured_ckpt, data, *pick, "-o", tmp_path / "d1", "--depth",
                "1") == 0
    cut = tmp_path / "cut"
    cut.mkdir()
    for file in structured.glob("*.vqz"):  # the length of a depth-1 file: header and chunk 1
        size = (tmp_path / "d1" / file.name).stat().st_size
        (cut / file.name).write_bytes(file.read_bytes()[:size])
    assert vqae("decompress", structured, "-o", tmp_path / "full") == 0
    assert vqae("decompress", structured, "-o", tmp_path / "prefix", "--depth", "1") == 0
    assert vqae("decompress", cut, "-o", tmp_path / "from-cut", "--ckpt", structured_ckpt) == 0
    # one name per idea: --levels (FSQ's bins in quantizer.levels) is no alias of --depth
    with pytest.raises(SystemExit):
        vqae("compress", structured_ckpt, data, *pick, "-o", tmp_path / "l1", "--levels", "1")
    for patch in patches_in(structured):
        check_prefix(tmp_path, patch, full="full", prefix="prefix", same="from-cut")


def test_native_output_reencodes_with_vqae_encode(structured, tmp_path):
    assert vqae("decompress", structured, "-o", tmp_path / "nat", "--native") == 0
    patch = patches_in(structured)[0]
    tiffs = read_tiffs(tmp_path / "nat", patch, ["B01", "B05", "B02"])
    assert {b: a.shape[0] for b, a in tiffs.items()} == {b: NATIVE_SIZE[b] for b in tiffs}
    assert_structured(tiffs, patch)
    assert main(["encode", "--bigearthnet-s2-root", str(tmp_path / "nat"),
                 str(tmp_path / "enc.lmdb"), "--workers", "1", "--no-progress"]) == 0
    stored = read_lmdb(tmp_path / "enc.lmdb")
    assert sorted(stored) == patches_in(structured)
    np.testing.assert_array_equal(stored[patch]["B05"], tiffs["B05"])
    from vqae.config import DataConfig

    with DataSource(DataConfig(path=str(tmp_path / "enc.lmdb"))) as source:
        assert source.dataset("all")[0]["image"].shape == (12, 120, 120)


def test_lmdb_of_bitstreams_decompresses_to_a_rico_hdl_lmdb(tiny_ckpt, fake_patches, tmp_path):
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", tmp_path / "bits.lmdb") == 0
    assert (tmp_path / "bits.lmdb" / "data.mdb").is_file()
    assert vqae("decompress", tmp_path / "bits.lmdb", "-o", tmp_path / "dn.lmdb") == 0
    stored = read_lmdb(tmp_path / "dn.lmdb")
    assert len(stored) == 8
    some = next(iter(stored.values()))
    assert some["B09"].shape == (20, 20) and some["B09"].dtype == np.uint16
    from vqae.config import DataConfig

    with DataSource(DataConfig(path=str(tmp_path / "dn.lmdb"))) as source:
        assert len(source.dataset("all")) == 8


def test_band_arrays_round_half_to_even_and_clamp():
    dn = np.array([[[-3.0, 0.5, 1.5, 70000.0]]], dtype=np.float32)  # (1, 1, 4)
    got = band_arrays(dn, ["B02"])["B02"]
    np.testing.assert_array_equal(got, [[0, 0, 2, 65535]])


def test_cli_errors_are_one_line_naming_the_file(compressed, tiny_ckpt, fake_patches, tmp_path,
                                                 capsys):
    damaged = tmp_path / "bad"
    damaged.mkdir()
    src = min(compressed.glob("*.vqz"))
    data = bytearray(src.read_bytes())
    data[-2] ^= 0xFF
    (damaged / src.name).write_bytes(bytes(data))
    capsys.readouterr()
    assert vqae("decompress", damaged, "-o", tmp_path / "x", "--ckpt", tiny_ckpt) == 2
    message = one_line_error(capsys.readouterr().err, "decompress")
    assert src.name in message and "CRC32" in message
    assert vqae("decompress", damaged, "-o", tmp_path / "y") == 2  # no manifest, no --ckpt
    assert "--ckpt" in one_line_error(capsys.readouterr().err, "decompress")
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", compressed) == 2
    assert "--overwrite" in one_line_error(capsys.readouterr().err, "compress")
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", tmp_path / "z", "--depth", "9") == 2
    assert "--depth 9" in one_line_error(capsys.readouterr().err, "compress")


def test_a_per_patch_model_sends_band_means_and_decodes_them(fake_patches, tmp_path):
    """model.patch_means end to end: each file's header holds its patch's rounded band means,
    and the GeoTIFFs are model.decode(indices, those means), rounded."""
    from tests.codec.conftest import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "pp.pt", fake_patches, overrides=["model.patch_means=true"])
    assert vqae("compress", ckpt, fake_patches, "-o", tmp_path / "vqz") == 0
    assert vqae("decompress", tmp_path / "vqz", "-o", tmp_path / "dec") == 0
    model, cfg = load_model(ckpt)
    codec = Codec(model, str(ckpt))
    with DataSource(cfg.data) as source:
        ds = source.dataset("all")
        images = {ds[i]["name"]: ds[i]["image"] for i in range(len(ds))}
    for file in sorted((tmp_path / "vqz").glob("*.vqz"))[:3]:
        patch = file.name[:-4]
        grid, header = codec.parse(file.read_bytes(), source=str(file))
        means = images[patch].mean(dim=(1, 2))
        np.testing.assert_allclose(header.patch_means, means.numpy(), atol=0.5)
        with torch.no_grad():
            dn = model.decode(torch.from_numpy(grid)[None],
                              torch.tensor([header.patch_means], dtype=torch.float32)).numpy()
        dn = torch.from_numpy(bandfilter.apply(dn, np.array([header.patch_means]), "gain",
                                               np.array([header.filter_codes]))[0])
        want = torch.round(dn).clamp(0, 65535).to(torch.int32).numpy()
        got = read_tiffs(tmp_path / "dec", patch, model.bands)
        for c, band in enumerate(model.bands):
            np.testing.assert_array_equal(got[band].astype(np.int32), want[c], err_msg=band)


@pytest.mark.parametrize("kind, extra", [("none", -12), ("mix", 144 - 12)])
def test_band_filter_choice_is_stored_and_decoded(structured_ckpt, structured_data, structured,
                                                  tmp_path, kind, extra):
    data, pick = structured_data
    out = tmp_path / kind
    assert vqae("compress", structured_ckpt, data, *pick, "-o", out, "--band-filter", kind) == 0
    assert vqae("decompress", out, "-o", tmp_path / "dec") == 0
    for file in sorted(out.glob("*.vqz")):
        gain_file = (structured / file.name).read_bytes()
        assert len(file.read_bytes()) - len(gain_file) == extra  # one byte per filter code
        got_kind, want = reference_decode(structured_ckpt, file)
        assert got_kind == kind
        got = read_tiffs(tmp_path / "dec", file.name[:-4], want)
        assert_structured(got, file.name)
        for band in want:
            np.testing.assert_array_equal(got[band], want[band], err_msg=band)
    assert json.loads((out / "manifest.json").read_text())["band_filter"] == kind
    assert json.loads((structured / "manifest.json").read_text())["band_filter"] == "gain"


def test_compress_shards_split_the_patches_and_resume_only_their_own(tiny_ckpt, fake_patches,
                                                                      tmp_path, capsys):
    from vqae.data.shards import shard_of

    parts = []
    for i in (1, 2):
        out = tmp_path / f"part-{i}"
        assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--shard", f"{i}/2") == 0
        parts.append(patches_in(out))
        assert all(shard_of(n, 2) == i for n in parts[-1])
        assert json.loads((out / "manifest.json").read_text())["shard"] == [i, 2]
    assert sorted(parts[0] + parts[1]) == patches_in_source(fake_patches) and all(parts)
    capsys.readouterr()
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", tmp_path / "part-1", "--resume",
                "--shard", "2/2") == 2
    assert "shard [1, 2]" in capsys.readouterr().err
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", tmp_path / "part-1",
                "--resume") == 2  # the whole set is not part 1: no silent mix


def patches_in_source(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def printed_table(text: str) -> dict[str, str]:
    """The `name value` rows of a printed summary table."""
    rows = (line.split() for line in text.splitlines())
    return {r[0]: r[1] for r in rows if len(r) == 2 and not set(r[0]) <= {"-"}}


def snapshot(folder) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("lmdb", [False, True])
def test_resume_of_a_complete_output_prints_its_report_and_changes_nothing(
        tiny_ckpt, fake_patches, tmp_path, capsys, lmdb):
    out = tmp_path / ("out.lmdb" if lmdb else "out")
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out) == 0
    first = printed_table(capsys.readouterr().out)
    before = snapshot(out)
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--resume") == 0
    text = capsys.readouterr().out
    assert f"OUT {out} is already complete: all 8 patches compressed with these settings, " \
           f"nothing to do; its report, from {out / 'patches.csv'}:" in text
    assert "to go" not in text and "compressing" not in text
    again = printed_table(text)
    assert again["patches"] == first["patches"] == "8" and again["bytes"] == first["bytes"]
    for key in ("bpp_coded", "bpppb", "bpp_index", "bpp_side", "depth/patch", "psnr",
                "psnr_pooled", "psnr_p10", "psnr_min", "patches_below"):
        assert float(again[key]) == pytest.approx(float(first[key]), abs=2e-4), key
    assert snapshot(out) == before  # not a byte nor a time stamp changed
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--resume", "--depth",
                "1") == 2  # other settings: refused as before, not reported as complete
    assert "depth 3" in capsys.readouterr().err


KINDS = ("a GeoTIFF folder, a .tar/.tar.gz archive, an LMDB or a folder of `vqae encode "
         "--shard` LMDBs")


@pytest.mark.parametrize("command, args, arg", [
    ("compress", ["{ckpt}", "{missing}", "-o", "{out}"], "INPUT"),
    ("rd", ["--ckpt", "{ckpt}", "--data", "{missing}", "--out", "{out}"], "--data"),
    ("evaluate", ["{ckpt}", "--data", "{missing}", "--out", "{out}/m.json"], "--data"),
    ("fit-prior", ["{ckpt}", "--data", "{missing}", "-o", "{out}/f.pt"], "--data"),
])
def test_a_missing_data_path_names_the_commands_own_argument(tiny_ckpt, tmp_path, capsys,
                                                             command, args, arg):
    missing, out = tmp_path / "nope", tmp_path / "out"
    argv = [a.format(ckpt=tiny_ckpt, missing=missing, out=out) for a in args]
    assert main([command, *argv]) == 2
    assert one_line_error(capsys.readouterr().err, command) == \
        f"{arg} {missing} does not exist; pass {KINDS}\n"
    assert not out.exists()


def test_evaluate_says_when_the_checkpoints_own_data_is_gone(fake_patches, tmp_path, capsys):
    from tests.codec.conftest import make_checkpoint

    data = tmp_path / "moved"
    shutil.copytree(fake_patches, data)
    ckpt = make_checkpoint(tmp_path / "m.pt", data, fit=False)
    shutil.rmtree(data)
    assert main(["evaluate", str(ckpt)]) == 2
    assert one_line_error(capsys.readouterr().err, "evaluate") == \
        f"the checkpoint's data path {data} (from its training config) does not exist; pass " \
        f"--data with {KINDS}\n"


def test_evaluate_lists_all_among_the_splits(tiny_ckpt, fake_patches, capsys):
    assert main(["evaluate", str(tiny_ckpt), "--data", str(fake_patches), "--split", "tset"]) == 2
    assert one_line_error(capsys.readouterr().err, "evaluate") == \
        "unknown split 'tset'; choose one of train, validation (val), test, or all (every patch)\n"


@pytest.mark.parametrize("single", [False, True])
def test_decompress_names_the_manifest_of_a_deleted_checkpoint(tiny_ckpt, fake_patches, tmp_path,
                                                               capsys, single):
    ckpt = tmp_path / "model.pt"
    shutil.copy(tiny_ckpt, ckpt)
    assert vqae("compress", ckpt, fake_patches, "-o", tmp_path / "vqz") == 0
    ckpt.unlink()
    given = min((tmp_path / "vqz").glob("*.vqz")) if single else tmp_path / "vqz"
    capsys.readouterr()
    assert vqae("decompress", given, "-o", tmp_path / "dec") == 2
    assert one_line_error(capsys.readouterr().err, "decompress") == \
        f"{tmp_path / 'vqz' / 'manifest.json'} names checkpoint {ckpt}, which does not exist " \
        f"(moved or deleted?); pass --ckpt CKPT, the checkpoint that compressed {given}\n"
    assert not (tmp_path / "dec").exists()
