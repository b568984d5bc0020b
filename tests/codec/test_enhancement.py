"""The enhancement layer (--max-error): lossless and near-lossless files on real patches, exact
on every path, and damaged layers refused in one line."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from vqae.checkpoint.manager import read_checkpoint, save_checkpoint
from vqae.cli import main
from vqae.codec import bitstream, enhancement
from vqae.codec.codec import Codec
from vqae.config import DataConfig
from vqae.data.source import DataSource
from vqae.errors import DataError


@pytest.fixture(scope="module")
def enhanced_ckpt(structured_ckpt, structured_data, tmp_path_factory):
    """The structured model with a residual model fitted by `vqae fit-residual` (few steps)."""
    out = tmp_path_factory.mktemp("residual") / "enhanced.pt"
    lmdb, _ = structured_data
    assert main(["fit-residual", str(structured_ckpt), "--data", str(lmdb), "--split", "all",
                 "--patches", "4", "--steps", "40", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def codec(enhanced_ckpt) -> Codec:
    return Codec.from_checkpoint(enhanced_ckpt, device="cpu")


@pytest.fixture(scope="module")
def patches(structured_data, codec):
    """Real patches of the sample as {band: native uint16}: test split and two more."""
    lmdb, _ = structured_data
    with DataSource(DataConfig(path=str(lmdb))) as source:
        ds = source.dataset("all")
        return {n: ds.load_raw(n, list(codec.bands)) for n in ds.names[:4]}


def max_error(a: dict, b: dict) -> int:
    assert set(a) == set(b)
    return max(int(np.abs(a[k].astype(np.int64) - b[k].astype(np.int64)).max()) for k in a)


def test_lossless_files_give_back_every_native_value(codec, patches):
    for name, patch in patches.items():
        data = codec.compress(patch, max_error=0)
        out = codec.decompress(data, source=name)
        for band in codec.bands:
            assert out[band].dtype == np.uint16 and out[band].shape == patch[band].shape
            np.testing.assert_array_equal(out[band], patch[band], err_msg=f"{name} {band}")
        assert data[4] == bitstream.ENHANCED


@pytest.mark.parametrize("e", [1, 2, 4, 8, 32])
def test_every_pixel_is_within_the_bound_and_bits_fall_with_it(codec, patches, e):
    patch = next(iter(patches.values()))
    data = codec.compress(patch, max_error=e)
    out = codec.decompress(data)
    assert max_error(out, patch) <= e
    assert len(data) < len(codec.compress(patch, max_error=0))
    header, _ = bitstream.parse_header(data, "f")
    assert header.max_error == e


def test_a_file_without_the_layer_is_what_it_was_and_the_stages_are_shared(codec, patches):
    patch = next(iter(patches.values()))
    lossy = codec.compress(patch)
    enhanced = codec.compress(patch, max_error=0)
    assert lossy[4] in (bitstream.UNSCALED, bitstream.VERSION)  # no layer: version 4 or 5
    _, pos = bitstream.parse_header(lossy, "a")
    _, epos = bitstream.parse_header(enhanced, "b")
    stages_end = len(lossy)
    # the stage chunks are the same bytes; the layer follows them
    assert enhanced[epos : epos + stages_end - pos] == lossy[pos:]
    a = codec.decompress(lossy)
    b = codec.decompress(enhanced, lossy=True)
    for band in codec.bands:
        np.testing.assert_array_equal(a[band], b[band])
    # cut right before the layer: flagged, an error unless the lossy stages are asked for
    cut = enhanced[: epos + stages_end - pos]
    parsed = codec.parse(cut)
    assert parsed.layer_cut and parsed.layer is None
    with pytest.raises(DataError, match="cut.*--lossy"):
        codec.decompress(cut, source="f.vqz")
    c = codec.decompress(cut, lossy=True)
    assert all(np.array_equal(a[k], c[k]) for k in codec.bands)


def layer_span(data: bytes, header_depth: int) -> tuple[int, int]:
    """(start of the layer chunk, start of its payload) in a file's bytes."""
    _, pos = bitstream.parse_header(data, "f")
    for _ in range(header_depth):
        length, p = bitstream.read_varint(data, pos)
        pos = p + 4 + length
    _, p = bitstream.read_varint(data, pos)
    return pos, p + 4


def test_damaged_truncated_or_swapped_layers_are_one_line_errors(codec, patches):
    p1, p2 = list(patches.values())[:2]
    data, other = codec.compress(p1, max_error=0), codec.compress(p2, max_error=0)
    start, payload = layer_span(data, codec.depth)
    flipped = bytearray(data)
    flipped[payload + 20] ^= 0x10
    with pytest.raises(DataError, match="enhancement layer.*CRC32") as err:
        codec.decompress(bytes(flipped), source="f.vqz")
    assert "\n" not in str(err.value) and "f.vqz" in str(err.value)
    with pytest.raises(DataError, match="enhancement layer.*truncated"):
        codec.decompress(data[:-5], source="f.vqz")
    # another patch's layer, whose chunk CRC holds (same model and stage): the pixels' CRC fails
    o_start, _ = layer_span(other, codec.depth)
    swapped = data[:start] + other[o_start:]
    with pytest.raises(DataError, match="fail their CRC32"):
        codec.decompress(swapped, source="f.vqz")
    with pytest.raises(DataError, match="after its last chunk"):
        codec.decompress(data + b"\0", source="f.vqz")


def test_the_layer_names_the_residual_model_it_needs(codec, patches, enhanced_ckpt, tmp_path):
    data = codec.compress(next(iter(patches.values())), max_error=2)
    state = read_checkpoint(enhanced_ckpt)
    state["residual"]["b2"] = state["residual"]["b2"] + 1  # a refitted model
    save_checkpoint(tmp_path / "refit.pt", state)
    with pytest.raises(DataError, match="another residual model"):
        Codec.from_checkpoint(tmp_path / "refit.pt", "cpu").decompress(data)
    del state["residual"]
    save_checkpoint(tmp_path / "none.pt", state)
    bare = Codec.from_checkpoint(tmp_path / "none.pt", "cpu")
    with pytest.raises(DataError, match="no residual model.*--lossy"):
        bare.decompress(data)
    assert set(bare.decompress(data, lossy=True)) == set(codec.bands)
    with pytest.raises(DataError, match="fit-residual"):
        bare.compress(next(iter(patches.values())), max_error=0)


@pytest.mark.parametrize("damage", ["tables", "bands", "hidden", "weights", "dtype"])
def test_a_malformed_residual_model_is_refused_when_needed_and_lossy_work_goes_on(
        enhanced_ckpt, patches, tmp_path, damage):
    state = read_checkpoint(enhanced_ckpt)
    r = state["residual"]
    if damage == "tables":
        r["tables"] = r["tables"][:, :5]
    elif damage == "bands":  # a model of 10 bands on a 12-band checkpoint
        r["meta"] = torch.tensor([0, 10, r["meta"][2], r["meta"][3]])
        r["w1"], r["ws"] = r["w1"][:, :-2], r["ws"][:, :-2]
    elif damage == "hidden":
        r["meta"] = torch.tensor([0, 12, 100000, r["meta"][3]])
    elif damage == "weights":
        r["w1"] = torch.full_like(r["w1"], -2**63)
    else:
        r["w1"] = r["w1"].double()
    save_checkpoint(tmp_path / "bad.pt", state)
    codec = Codec.from_checkpoint(tmp_path / "bad.pt", "cpu")
    patch = next(iter(patches.values()))
    assert codec.decompress(codec.compress(patch))  # lossy: the residual model is not needed
    with pytest.raises(DataError, match="bad.pt.*residual model.*--replace") as err:
        codec.compress(patch, max_error=0)
    assert "\n" not in str(err.value)


def test_fit_residual_never_replaces_a_model_in_place_unasked(enhanced_ckpt, structured_data,
                                                              tmp_path, capsys):
    lmdb, _ = structured_data
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(enhanced_ckpt.read_bytes())
    before = ckpt.read_bytes()
    args = ["fit-residual", str(ckpt), "--data", str(lmdb), "--split", "all", "--patches", "2",
            "--steps", "5"]
    assert main(args) != 0
    assert "--replace" in capsys.readouterr().err and ckpt.read_bytes() == before
    assert main([*args, "--replace"]) == 0
    assert ckpt.read_bytes() != before
    Codec.from_checkpoint(ckpt, "cpu").check_max_error(0)


def test_numpy_and_float_bounds(codec, patches):
    patch = next(iter(patches.values()))
    out = codec.decompress(codec.compress(patch, max_error=np.uint8(200)))
    assert max_error(out, patch) <= 200  # 2 E + 1 in uint8 would wrap
    for bad in (3.0, "3", True):
        with pytest.raises(DataError, match="max error"):
            codec.compress(patch, max_error=bad)


def test_bad_bounds_and_inputs_are_refused(codec, patches):
    patch = next(iter(patches.values()))
    for bad in (-1, 65536, 1.5):
        with pytest.raises(DataError, match="max error"):
            codec.compress(patch, max_error=bad)
    with pytest.raises(DataError, match="native"):
        codec.compress(codec.image(patch).numpy(), max_error=0)  # a stacked array
    half = dict(patch, B05=patch["B05"][:30])
    with pytest.raises(DataError, match="B05.*native 60x60"):
        codec.compress(half, max_error=0)


def test_decoding_is_exact_across_threads_dtypes_and_processes(codec, patches, enhanced_ckpt,
                                                               tmp_path):
    patch = next(iter(patches.values()))
    data = codec.compress(patch, max_error=1)
    want = codec.decompress(data)
    threads, default = torch.get_num_threads(), torch.get_default_dtype()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            fresh = Codec.from_checkpoint(enhanced_ckpt, "cpu")
            assert all(np.array_equal(want[b], fresh.decompress(data)[b]) for b in want)
        fresh = Codec.from_checkpoint(enhanced_ckpt, "cpu")
        torch.set_default_dtype(torch.float64)  # every new float tensor float64 while decoding
        assert all(np.array_equal(want[b], fresh.decompress(data)[b]) for b in want)
        # the base in float32 lands within a few thousandths of a DN: exactness needs float64
        values = fresh.base_values(*_stages(fresh, data))
        fresh._model64 = fresh.model.float()
        values32 = fresh.base_values(*_stages(fresh, data))
        assert 0 < max(np.abs(a - b).max() for a, b in zip(values, values32)) < 0.5
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(default)
    (tmp_path / "f.vqz").write_bytes(data)
    script = ("import sys, numpy as np; from vqae import Codec; c = Codec.from_checkpoint("
              "sys.argv[1], 'cpu'); out = c.decompress(open(sys.argv[2], 'rb').read()); "
              "np.savez(sys.argv[3], **out)")
    subprocess.run([sys.executable, "-c", script, str(enhanced_ckpt), str(tmp_path / "f.vqz"),
                    str(tmp_path / "out.npz")], check=True, env={"OMP_NUM_THREADS": "1",
                                                                 "PATH": "/usr/bin:/bin"})
    got = np.load(tmp_path / "out.npz")
    assert all(np.array_equal(want[b], got[b]) for b in want)


def _stages(codec, data):
    parsed = codec.parse(data)
    h = parsed.header
    return parsed.indices, h.patch_means + h.patch_scales, h.filter_kind, h.filter_codes


def test_the_base_offset_avoids_values_near_a_step_and_falls_back_to_no_base(codec, patches):
    values = [np.array([[3.5, 7.25]]), np.array([[1.0 + 2**-22]])]
    code = enhancement.pick_offset(values)
    assert code != enhancement.NO_BASE and enhancement.OFFSETS[code] not in (0.5, 0.0)
    every = [np.array([[o + k for o in np.linspace(0, 1, 16, endpoint=False)] for k in range(2)])]
    assert enhancement.pick_offset(every) == enhancement.NO_BASE
    # a layer against no base is still exact
    patch = next(iter(patches.values()))
    order = enhancement.coding_order(codec.bands)
    originals = [patch[codec.bands[c]].astype(np.int64) for c in order]
    zeros = [np.zeros(o.shape) + 0.5 for o in originals]  # every value on a step of 0.5
    values = [z + np.asarray(enhancement.OFFSETS)[np.arange(z.size) % 16].reshape(z.shape)
              for z in zeros]
    layer = enhancement.encode_layer(codec.residual, values, originals, 0)
    assert layer.offset_code == enhancement.NO_BASE
    back = enhancement.decode_layer(codec.residual, values, layer.payload, 0, "f")
    assert all(np.array_equal(a, b) for a, b in zip(back, originals))


def test_compress_and_decompress_commands_keep_native_values(enhanced_ckpt, structured_data,
                                                             patches, tmp_path):
    lmdb, _ = structured_data
    out, back = tmp_path / "vqz", tmp_path / "dn"
    assert main(["compress", str(enhanced_ckpt), str(lmdb), "-o", str(out), "--max-error",
                 "0", "--no-progress", "--split", "all"]) == 0
    rows = (out / "patches.csv").read_text().splitlines()
    assert rows[0].endswith("max_error,max_abs_error")
    assert all(r.endswith(",0,0") for r in rows[1:])
    assert main(["decompress", str(out), "-o", str(back), "--no-progress"]) == 0
    for name, patch in patches.items():
        for band, array in patch.items():
            with rasterio.open(back / name / f"{name}_{band}.tif") as src:
                np.testing.assert_array_equal(src.read(1), array)


def test_compress_refuses_max_error_without_a_residual_model(structured_ckpt, structured_data,
                                                             tmp_path, capsys):
    lmdb, _ = structured_data
    assert main(["compress", str(structured_ckpt), str(lmdb), "-o", str(tmp_path / "o"),
                 "--max-error", "0", "--no-progress"]) != 0
    assert "fit-residual" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_rate_control_reaches_every_psnr_target_through_the_layer(codec, patches):
    from vqae.codec.ratecontrol import Target, compress_to_target

    names = list(patches)[:2]
    x = torch.stack([codec.image(patches[n]) for n in names])
    offsets = codec.model.normalize.offsets().cpu()
    for t in (45.0, 60.0):
        picks = compress_to_target(codec, x, Target(psnr=t), codec.depth, ("gain",), offsets,
                                   [patches[n] for n in names])
        for (file, choice), n in zip(picks, names):
            assert choice.psnr >= t and file.max_error is not None, (t, n, choice)
            out = codec.decompress(file.data)
            assert max_error(out, patches[n]) <= file.max_error


def test_a_version_6_header_with_a_bad_layer_kind_is_damaged(codec, patches):
    data = bytearray(codec.compress(next(iter(patches.values())), max_error=0))
    _, pos = bitstream.parse_header(bytes(data), "f")
    kind_at = pos - 4 - 3
    data[kind_at] = 7
    body = bytes(data[: pos - 4])
    data[pos - 4 : pos] = struct.pack("<I", __import__("zlib").crc32(body))
    with pytest.raises(DataError, match="impossible values"):
        codec.decompress(bytes(data))


def test_resume_names_a_different_max_error(enhanced_ckpt, structured_data, tmp_path, capsys):
    lmdb, _ = structured_data
    out = tmp_path / "o"
    base = ["compress", str(enhanced_ckpt), str(lmdb), "-o", str(out), "--no-progress",
            "--split", "test"]
    assert main([*base, "--max-error", "3"]) == 0
    capsys.readouterr()
    assert main([*base, "--resume"]) != 0
    assert "max_error 3" in capsys.readouterr().err
