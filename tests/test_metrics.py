import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqae import metrics as m

BANDS = ["B02", "B03", "B04"]


def _pair(seed=0, shape=(3, 3, 32, 32), noise=200.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 6000 + 500
    return x, x + torch.randn(shape, generator=g) * noise


# --- PSNR ---

def test_psnr_hand_computed():
    x = torch.zeros(1, 2, 4, 4)
    x_hat = torch.full((1, 2, 4, 4), 100.0)  # MSE 1e4 -> 10*log10(1e8/1e4) = 40 dB
    assert m.psnr(x, x_hat).item() == pytest.approx(40.0)
    x_hat[0, 1] = 0.0  # band 1 perfect: MSE over everything halves -> +3.0103 dB
    assert m.psnr(x, x_hat).item() == pytest.approx(40.0 + 10 * math.log10(2), abs=1e-5)
    per_band = m.psnr_per_band(x, x_hat)
    assert per_band.shape == (1, 2)
    assert per_band[0, 0].item() == pytest.approx(40.0)
    assert per_band[0, 1].item() == pytest.approx(10 * math.log10(1e8 / m.MSE_FLOOR))


def test_psnr_clamps_both_to_valid_range():
    x = torch.tensor([12000.0, -50.0, 5000.0, 5000.0]).view(1, 1, 2, 2)
    x_hat = torch.tensor([10000.0, 0.0, 5000.0, 5100.0]).view(1, 1, 2, 2)
    # After the clamp only the last pixel differs: MSE = 100^2 / 4.
    assert m.psnr(x, x_hat).item() == pytest.approx(10 * math.log10(1e8 / 2500.0), abs=1e-5)
    both_bright = torch.full((1, 1, 2, 2), 15000.0)
    assert m.psnr(both_bright, both_bright + 3000).item() == pytest.approx(180.0)


def test_psnr_offset_subtracted_before_clamp():
    x = torch.full((1, 1, 2, 2), 1000.0)  # 0 after removing the L2A offset
    x_hat = torch.full((1, 1, 2, 2), 900.0)  # -100 -> clamped to 0: perfect
    assert m.psnr(x, x_hat, offset=1000).item() == pytest.approx(180.0)
    assert m.psnr(x, x_hat).item() == pytest.approx(40.0)  # no offset: error 100


def test_psnr_batched_is_per_patch():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.stack([torch.full((1, 2, 2), 100.0), torch.full((1, 2, 2), 10.0)])
    np.testing.assert_allclose(m.psnr(x, x_hat).numpy(), [40.0, 60.0], rtol=1e-6)


# --- SSIM ---

def test_ssim_identical_is_one_and_shape():
    x, _ = _pair()
    out = m.ssim(x, x)
    assert out.shape == (3,)
    torch.testing.assert_close(out, torch.ones(3))


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x, x_hat = _pair(seed=1, shape=(2, 3, 40, 36), noise=800.0)
    x_hat[0, 0, :5] = 12000  # exercise the clamp
    ours = m.ssim_per_band(x, x_hat)
    xc, yc = x.clamp(0, 10000).double().numpy(), x_hat.clamp(0, 10000).double().numpy()
    for b in range(2):
        for c in range(3):
            ref = skm.structural_similarity(
                xc[b, c], yc[b, c], data_range=10000, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False)
            assert ours[b, c].item() == pytest.approx(ref, abs=1e-5)
    torch.testing.assert_close(m.ssim(x, x_hat), ours.mean(dim=1))


def test_ssim_rejects_tiny_patches():
    with pytest.raises(ValueError, match="at least 11x11"):
        m.ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# --- SAM ---

def test_sam_known_angles():
    x = torch.zeros(1, 2, 1, 3)
    y = torch.zeros(1, 2, 1, 3)
    x[0, :, 0, 0], y[0, :, 0, 0] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0])  # 90
    x[0, :, 0, 1], y[0, :, 0, 1] = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 3.0])  # 45
    x[0, :, 0, 2], y[0, :, 0, 2] = torch.tensor([2.0, 2.0]), torch.tensor([7.0, 7.0])  # 0
    assert m.sam(x, y).item() == pytest.approx((90 + 45 + 0) / 3, abs=1e-4)


def test_sam_zero_vectors_are_guarded():
    zero = torch.zeros(1, 3, 1, 1)
    one = torch.ones(1, 3, 1, 1)
    assert m.sam(zero, zero).item() == 0.0
    assert m.sam(zero, one).item() == pytest.approx(90.0)
    assert torch.isfinite(m.sam(zero, one)).all()


def test_sam_small_angle_is_accurate():
    x = torch.tensor([5000.0, 5000.0]).view(1, 2, 1, 1)
    y = torch.tensor([5000.0, 5001.0]).view(1, 2, 1, 1)
    expected = math.degrees(math.atan2(5001, 5000) - math.pi / 4)
    assert m.sam(x, y).item() == pytest.approx(expected, rel=1e-3)


# --- rates ---

def test_bpp_formulas():
    # 15x15 latent, 2 levels, K=1024: 225 * 2 * 10 / 14400
    assert m.bpp_index(225, 2, 1024) == pytest.approx(4500 / 14400)
    assert m.bpp_index(16, 1, 256, height=4, width=8) == pytest.approx(16 * 8 / 32)
    assert m.bpp_coded(1800) == pytest.approx(1.0)  # 14400 bits over 14400 pixels
    assert m.bpp_coded(1800, num_patches=2) == pytest.approx(0.5)
    assert m.bpppb(1.2, 12) == pytest.approx(0.1)


def test_entropy_of_known_histograms():
    assert m.entropy_bits(torch.tensor([5, 5, 5, 5])).item() == pytest.approx(2.0)
    assert m.entropy_bits(torch.tensor([0.25, 0.25, 0.25, 0.25])).item() == pytest.approx(2.0)
    assert m.entropy_bits(torch.tensor([7, 0, 0, 0])).item() == 0.0
    assert m.entropy_bits(torch.tensor([1, 1, 2, 0])).item() == pytest.approx(1.5)


def test_bpp_histogram_sums_levels():
    hist = torch.tensor([[5, 5, 5, 5], [8, 8, 0, 0]])  # 2 bits + 1 bit per position
    assert m.bpp_histogram(hist, positions=144) == pytest.approx(144 * 3 / 14400)
    assert m.bpp_histogram(hist[0], positions=144) == pytest.approx(144 * 2 / 14400)
    # uniform over all K codes gives the fixed-length rate
    uniform = torch.ones(3, 16)
    assert m.bpp_histogram(uniform, 225) == pytest.approx(m.bpp_index(225, 3, 16))


# --- codebook health ---

def test_usage_perplexity_dead_codes():
    counts = torch.tensor([[4, 4, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(m.usage(counts), torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(m.perplexity(counts), torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert m.dead_codes(counts).tolist() == [2, 0]
    assert m.health_metrics(counts) == pytest.approx({
        "usage/0": 0.5, "usage/1": 1.0, "perplexity/0": 2.0, "perplexity/1": 4.0,
        "dead_codes/0": 2, "dead_codes/1": 0})


def test_index_histogram_per_level():
    idx = torch.tensor([[[[0, 1], [1, 3]], [[2, 2], [2, 2]]]])  # (1, 2 levels, 2, 2)
    assert m.index_histogram(idx, 4).tolist() == [[1, 2, 0, 1], [0, 0, 4, 0]]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.index_histogram(idx, 3)


# --- accumulator ---

def _batches(n=3):
    g = torch.Generator().manual_seed(7)
    for i in range(n):
        x, x_hat = _pair(seed=i, shape=(2, 3, 16, 16))
        yield x, x_hat, torch.randint(0, 8, (2, 2, 4, 4), generator=g)


def test_accumulator_keys_and_averages():
    acc = m.MetricAccumulator(BANDS, codebook_size=8)
    data = list(_batches())
    for x, x_hat, idx in data:
        acc.update(x, x_hat, idx)
    acc.reduce()  # not distributed: a no-op
    out = acc.compute()
    assert list(out) == ["psnr", "psnr_pooled", "psnr_p10", "psnr_min", "patches_below",
                         "psnr/B02", "psnr/B03", "psnr/B04", "ssim", "sam", "bpp_index",
                         "bpp_histogram", "usage/0", "usage/1", "perplexity/0", "perplexity/1",
                         "dead_codes/0", "dead_codes/1"]
    xs = torch.cat([d[0] for d in data])
    ys = torch.cat([d[1] for d in data])
    idx = torch.cat([d[2] for d in data])
    assert acc.num_patches == 6
    assert out["psnr"] == pytest.approx(m.psnr(xs, ys).mean().item(), rel=1e-6)
    assert out["psnr/B03"] == pytest.approx(m.psnr_per_band(xs, ys)[:, 1].mean().item(), rel=1e-6)
    assert out["ssim"] == pytest.approx(m.ssim(xs, ys).mean().item(), rel=1e-6)
    assert out["sam"] == pytest.approx(m.sam(xs, ys).mean().item(), rel=1e-6)
    assert out["bpp_index"] == pytest.approx(16 * 2 * 3 / 256)
    hist = m.index_histogram(idx, 8)
    assert out["bpp_histogram"] == pytest.approx(m.bpp_histogram(hist, 16, 16, 16))
    assert out["dead_codes/1"] == m.dead_codes(hist)[1].item()


def test_aggregates_name_the_worst_patches():
    """Patches of known MSE (a constant error e: MSE = e^2), fed in uneven batches."""
    errors = torch.arange(1, 21, dtype=torch.float64) * 10.0  # 60 dB down to 34 dB
    x = torch.full((20, 3, 12, 12), 5000.0)
    x_hat = x + errors.float().view(-1, 1, 1, 1)
    acc = m.MetricAccumulator(BANDS, 4, psnr_threshold=40.0)
    seen = torch.cat([acc.update(x[a:b], x_hat[a:b]) for a, b in ((0, 3), (3, 4), (4, 20))])
    out = acc.compute()
    exact = 20 * torch.log10(1e4 / errors)
    assert torch.allclose(seen.double(), exact, atol=1e-4)
    assert out["psnr"] == pytest.approx(float(exact.mean()), abs=1e-4)
    assert out["psnr_pooled"] == pytest.approx(10 * math.log10(1e8 / float((errors**2).mean())))
    assert out["psnr_pooled"] < out["psnr"] - 3  # every pixel weighs the same: the worst rule
    assert out["psnr_min"] == pytest.approx(float(exact.min()), abs=1e-4)
    # nearest rank: the ceil(0.1 * 20) = 2nd smallest, to half a bin
    assert out["psnr_p10"] == pytest.approx(float(exact.sort().values[1]), abs=m.PSNR_BIN / 2 + 1e-9)
    assert out["patches_below"] == 10  # errors 110..200 are under 40 dB
    assert m.percentile_from_bins(m.psnr_bins(exact[:1]).bincount(minlength=m.PSNR_BINS),
                                  0.1) == pytest.approx(float(exact[0]), abs=m.PSNR_BIN / 2 + 1e-9)


def test_aggregates_of_perfect_and_hopeless_patches_stay_in_range():
    x = torch.zeros(2, 3, 12, 12)
    x_hat = torch.stack([x[0], torch.full((3, 12, 12), 20000.0)])  # exact; all at the peak
    out = m.MetricAccumulator(BANDS, 4).update(x, x_hat)
    assert out.tolist() == pytest.approx([180.0, 0.0], abs=1e-4)
    acc = m.MetricAccumulator(BANDS, 4)
    acc.update(x, x_hat)
    assert acc.compute()["psnr_min"] == pytest.approx(0.0, abs=1e-4)
    assert acc.compute()["psnr_pooled"] == pytest.approx(10 * math.log10(2))


def test_accumulator_reports_side_information_bits_apart():
    data = list(_batches())
    plain, side = m.MetricAccumulator(BANDS, 8), m.MetricAccumulator(BANDS, 8, side_bits=48)
    for acc in (plain, side):
        for x, x_hat, idx in data:
            acc.update(x, x_hat, idx)
    a, b = plain.compute(), side.compute()
    assert b.pop("bpp_side") == pytest.approx(48 / (16 * 16)) and "bpp_side" not in a
    assert b == a  # bpp_index and bpp_histogram stay DESIGN.md's: indices only


def test_accumulator_single_level_and_without_indices():
    x, x_hat = _pair(shape=(1, 3, 12, 12))
    acc = m.MetricAccumulator(BANDS, codebook_size=4)
    acc.update(x, x_hat, torch.zeros(1, 3, 3, dtype=torch.long))
    out = acc.compute()
    assert out["usage/0"] == 0.25 and out["bpp_histogram"] == 0.0
    plain = m.MetricAccumulator(BANDS, codebook_size=4)
    plain.update(x, x_hat)
    assert "bpp_index" not in plain.compute()


def test_accumulator_errors():
    acc = m.MetricAccumulator(BANDS, codebook_size=4)
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()
    with pytest.raises(ValueError, match="3 bands"):
        acc.update(torch.zeros(1, 2, 12, 12), torch.zeros(1, 2, 12, 12))
    acc.reduce()
    with pytest.raises(RuntimeError, match="after reduce"):
        acc.update(torch.zeros(1, 3, 12, 12), torch.zeros(1, 3, 12, 12))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, batches, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        acc = m.MetricAccumulator(BANDS, codebook_size=8)
        for x, x_hat, idx in batches[rank::2]:
            acc.update(x, x_hat, idx)
        acc.reduce()
        results[rank] = acc.compute()
    finally:
        dist.destroy_process_group()


def test_accumulator_reduce_across_two_gloo_ranks():
    batches = list(_batches(4))
    single = m.MetricAccumulator(BANDS, codebook_size=8)
    for b in batches:
        single.update(*b)
    expected = single.compute()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), batches, results), nprocs=2)
        for rank in (0, 1):
            assert results[rank] == pytest.approx(expected, rel=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_accumulator_on_cuda_matches_cpu():
    cpu, gpu = m.MetricAccumulator(BANDS, 8), m.MetricAccumulator(BANDS, 8)
    for x, x_hat, idx in _batches():
        cpu.update(x, x_hat, idx)
        gpu.update(x.cuda(), x_hat.cuda(), idx.cuda())
    assert gpu.compute() == pytest.approx(cpu.compute(), rel=1e-4)
