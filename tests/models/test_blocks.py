"""GroupNorm's channels-last path: the same values and gradients as the native op, in the
input's memory format and dtype (run here on the CPU through the autograd function itself;
the module takes it on CUDA only, see test_cuda.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqae.models.blocks import ChannelsLastGroupNorm, GroupNorm, norm

CL = torch.channels_last


def affine(channels: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    weight = (0.5 + torch.rand(channels, generator=gen, dtype=dtype)).requires_grad_()
    bias = torch.randn(channels, generator=gen, dtype=dtype).requires_grad_()
    return weight, bias


def activations(dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(2, 16, 5, 6, generator=gen, dtype=dtype)  # off-centre on purpose
    return x.contiguous(memory_format=CL).requires_grad_()


def test_channels_last_group_norm_gradients_are_exact():
    weight, bias = affine(16)
    assert torch.autograd.gradcheck(
        lambda x, w, b: ChannelsLastGroupNorm.apply(x, 4, w, b, 1e-5),
        (activations(), weight, bias))


def test_channels_last_group_norm_matches_native_op_and_keeps_layout():
    x, (weight, bias) = activations(), affine(16)
    y = ChannelsLastGroupNorm.apply(x, 4, weight, bias, 1e-5)
    expected = F.group_norm(x, 4, weight, bias, 1e-5)
    assert y.is_contiguous(memory_format=CL)
    assert torch.allclose(y, expected, atol=1e-12)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, weight, bias), grad)
    want = torch.autograd.grad(expected, (x, weight, bias), grad)
    assert got[0].is_contiguous(memory_format=CL)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(got, want))


def test_channels_last_group_norm_stays_in_bfloat16_with_fp32_statistics():
    x = activations(torch.float32).detach().bfloat16().contiguous(memory_format=CL)
    weight, bias = (t.detach().float() for t in affine(16))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # switched off inside, as on CUDA
        y = ChannelsLastGroupNorm.apply(x, 4, weight, bias, 1e-5)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=CL)
    expected = F.group_norm(x.float(), 4, weight, bias, 1e-5)
    assert (y.float() - expected).abs().max() < 2 ** -7 * expected.abs().max()  # bf16 rounding


def test_norm_is_a_plain_group_norm_to_the_state_dict():
    layer = norm(48, 32)  # 32 groups do not divide 48: 16 do
    assert isinstance(layer, GroupNorm) and layer.num_groups == 16
    assert set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 48, 4, 4).contiguous(memory_format=CL)  # a CPU tensor: the native op
    assert torch.equal(layer(x), F.group_norm(x, 16, layer.weight, layer.bias, layer.eps))
