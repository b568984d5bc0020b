"""GPU (skipped without CUDA): bf16 autocast agrees with fp32 on the CPU, the channels-last
GroupNorm matches the native op, and a quantizer training step never syncs the device."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.models.test_autoencoder import tiny_config
from vqae.config import QuantizerConfig
from vqae.models import QUANTIZERS, build_model, quantizer_kwargs
from vqae.models.blocks import norm

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("name", ["vq", "rvq", "fsq"])
def test_quantizer_bf16_autocast_on_gpu_matches_fp32_cpu(name):
    torch.manual_seed(0)
    cfg = QuantizerConfig(name=name, codebook_size=64, depth=3 if name == "rvq" else 1,
                          kmeans_init=False)
    cpu = QUANTIZERS[name](16, **quantizer_kwargs(cfg)).eval()
    gpu = QUANTIZERS[name](16, **quantizer_kwargs(cfg)).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    z = torch.randn(4, 16, 15, 15).bfloat16()  # the same bf16 values on both devices
    expected = cpu(z.float())
    z_gpu = z.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = gpu(z_gpu)
    assert got.quantized.dtype == torch.bfloat16
    agree = (got.indices.cpu() == expected.indices).float().mean()
    assert agree > 0.99  # fp32 distance math: only exact ties may differ
    assert torch.allclose(got.quantized.float().cpu(), expected.quantized, atol=2e-2, rtol=2e-2)
    got.quantized.float().square().mean().backward()
    assert torch.isfinite(z_gpu.grad).all()


def test_autoencoder_bf16_autocast_on_gpu_matches_fp32_cpu():
    torch.manual_seed(0)
    cfg = tiny_config(name="rvq", kmeans_init=False)
    cfg.model = dataclasses.replace(cfg.model, widths=[16, 32], latent_dim=16)
    cpu = build_model(cfg).eval()
    gpu = build_model(cfg).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = 3000 * torch.rand(2, 12, 120, 120)  # digital numbers
    expected = cpu(x)
    x_gpu = x.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = gpu(x_gpu)
        loss = F.mse_loss(got.recon.float(), got.target) + sum(got.losses.values())
    loss.backward()
    assert got.recon.shape == expected.recon.shape
    assert (got.indices.cpu() == expected.indices).float().mean() > 0.9  # bf16 convs shift a few
    error = (got.recon.float().cpu() - expected.recon).abs().mean() / expected.recon.abs().mean()
    assert error < 0.1
    assert all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_keeps_channels_last_and_dtype_on_gpu(dtype):
    torch.manual_seed(0)
    layer = norm(64, 32).cuda()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    x = (3 + torch.randn(4, 64, 30, 30, device="cuda")).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = layer(x)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    x32 = x.detach().float().requires_grad_()
    expected = F.group_norm(x32, 32, layer.weight, layer.bias, layer.eps)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert torch.allclose(y.float(), expected, atol=tol, rtol=tol)
    grad = torch.randn_like(expected)
    y.backward(grad.to(dtype))
    expected.backward(grad)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x.grad.float(), x32.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ["vq", "rvq"])
@pytest.mark.parametrize("ema", [True, False])
def test_quantizer_training_step_never_waits_for_the_gpu(name, ema):
    torch.manual_seed(0)
    cfg = QuantizerConfig(name=name, codebook_size=64, depth=3 if name == "rvq" else 1, ema=ema,
                          dropout=True, revive_threshold=0.9)
    quantizer = QUANTIZERS[name](16, **quantizer_kwargs(cfg)).cuda()
    z = torch.randn(8, 16, 15, 15, device="cuda").contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = quantizer(z.bfloat16().requires_grad_())
        (out.quantized.float().square().mean() + sum(out.losses.values())).backward()

    step()  # the k-means init may sync, once
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
