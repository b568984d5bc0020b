"""Fitting the enhancement layer's residual model on a trained checkpoint (`vqae fit-residual`).

Fitted after training, like the prior, with the VQ model frozen: the layer codes the residual
of exactly the base the finished model decodes, so a joint term during training would chase a
moving target and trade base quality for residual bits. The float network (same inputs and
shape as the integer one) is trained on the integer features of real patches to minimise the
bits of the residual under a discretized Laplace mixture, at quantizer steps drawn from the
range users ask for; then its weights are rounded to fixed point (ResidualModel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vqae.codec.enhancement import coding_order, integer_base, pick_offset, quantize, step_of
from vqae.entropy.residual_features import features, ls_fit, phase_mask
from vqae.entropy.residual_model import (
    INPUT_BITS,
    KINDS,
    MAX_WEIGHT,
    PHASES,
    TAIL_SCALE,
    TAIL_WEIGHT,
    WEIGHT_BITS,
    ResidualModel,
    build_tables,
    feature_count,
)

FIT_ERRORS = (0, 0, 1, 2, 4, 8, 16, 32, 64, 128)  # bounds the samples are drawn at (0 twice)
MIN_PROB = 2.0**-22  # the tables' smallest probability


@dataclass
class FitOptions:
    kind: str = "mlp"  # residual_model.KINDS
    hidden: int = 32
    steps: int = 600
    batch: int = 32768
    lr: float = 1e-2
    keep: float = 0.25  # fraction of each patch's samples kept for the fit
    errors_per_patch: int = 2
    seed: int = 0


def patch_samples(codec, native: dict, max_error: int, keep: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One patch at one bound -> (features (N, F), residual r (N,)) of a random `keep` of its
    samples, the features computed as the layer computes them, with each decoded residual
    taken as the quantized residual (the mean is what the model learns)."""
    data = codec.compress(native)
    parsed = codec.parse(data)
    h = parsed.header
    values = codec.base_values(parsed.indices, h.patch_means + h.patch_scales, h.filter_kind,
                               h.filter_codes)
    bases = integer_base(values, pick_offset(values))
    order = coding_order(codec.bands)
    step = step_of(max_error)
    gs, rs, rhos = [], [], []
    for pos, (c, base) in enumerate(zip(order, bases)):
        r_full = np.asarray(native[codec.bands[c]], np.int64) - base
        rho = quantize(r_full, max_error) * step
        weights = ls_fit(r_full, rhos[::-1])
        for k in range(len(PHASES)):
            at = phase_mask(base.shape[0], k)
            g = features(pos, len(bases), k, step, base, rho, rhos[::-1], weights)
            pick = rng.random(len(g)) < keep
            gs.append(g[pick])
            rs.append(r_full[at][pick])
        rhos.append(rho)
    return np.concatenate(gs), np.concatenate(rs)


def collect(codec, patches: Sequence[dict], opts: FitOptions):
    """Samples of every patch at `errors_per_patch` bounds: (features float32, r, step)."""
    rng = np.random.default_rng(opts.seed)
    gs, rs, steps = [], [], []
    for native in patches:
        for e in rng.choice(FIT_ERRORS, opts.errors_per_patch, replace=False):
            g, r = patch_samples(codec, native, int(e), opts.keep, rng)
            gs.append(g.astype(np.float32))
            rs.append(r.astype(np.float32))
            steps.append(np.full(len(r), step_of(int(e)), np.float32))
    return (torch.from_numpy(np.concatenate(gs)), torch.from_numpy(np.concatenate(rs)),
            torch.from_numpy(np.concatenate(steps)))


def feature_mask(kind: str, bands: int) -> torch.Tensor:
    """Inputs a kind may use: all, or (static) the band one-hot and the step only."""
    mask = torch.ones(feature_count(bands))
    if kind == "static":
        mask[:] = 0
        mask[:bands] = 1
        mask[bands + len(PHASES)] = 1
    return mask


class FloatResidual(torch.nn.Module):
    """The float twin of ResidualModel: out = W2 relu(W1 x + b1) + Ws x + b2, x = g / 2^8;
    out[0] x 16 is the mean in DN, out[1] log2 of the Laplace scale in DN."""

    def __init__(self, features_: int, hidden: int, mask: torch.Tensor, scale0: float):
        super().__init__()
        self.mask = mask
        self.w1 = torch.nn.Linear(features_, hidden) if hidden else None
        self.w2 = torch.nn.Linear(hidden, 2, bias=False) if hidden else None
        self.ws = torch.nn.Linear(features_, 2)
        torch.nn.init.zeros_(self.ws.weight)
        with torch.no_grad():
            self.ws.bias.copy_(torch.tensor([0.0, scale0]))
            if self.w2 is not None:
                self.w2.weight.mul_(0.1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        x = g * self.mask / 2**INPUT_BITS
        out = self.ws(x)
        if self.w1 is not None:
            out = out + self.w2(torch.relu(self.w1(x)))
        return out


def bits(out: torch.Tensor, r: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Bits of each residual's quantization bin under the predicted Laplace mixture."""
    v = r - out[:, 0] * 16
    b = torch.exp2(out[:, 1].clamp(-4, 17))
    p = 0.0
    for w, scale in ((1 - TAIL_WEIGHT, 1.0), (TAIL_WEIGHT, TAIL_SCALE)):
        p = p + w * (laplace_cdf(v + step / 2, b * scale) - laplace_cdf(v - step / 2, b * scale))
    return -torch.log2(p.clamp_min(MIN_PROB))


def laplace_cdf(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.sign(x) * (1 - torch.exp(-x.abs() / b))


def train(samples, bands: int, opts: FitOptions, log=print) -> FloatResidual:
    g, r, step = samples
    torch.manual_seed(opts.seed)
    hidden = opts.hidden if opts.kind == "mlp" else 0
    scale0 = float(torch.log2(r.abs().mean().clamp_min(1.0)))
    net = FloatResidual(g.shape[1], hidden, feature_mask(opts.kind, bands), scale0)
    optim = torch.optim.Adam(net.parameters(), lr=opts.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, opts.steps)
    gen = torch.Generator().manual_seed(opts.seed)
    for i in range(opts.steps):
        pick = torch.randint(len(g), (min(opts.batch, len(g)),), generator=gen)
        loss = bits(net(g[pick]), r[pick], step[pick]).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        with torch.no_grad():
            for p in net.parameters():
                p.clamp_(-MAX_WEIGHT, MAX_WEIGHT)
        if log and (i + 1) % max(1, opts.steps // 5) == 0:
            log(f"  step {i + 1}/{opts.steps}: {loss.item():.3f} bits per sample")
    return net


def to_integer(net: FloatResidual, kind: str, bands: int) -> ResidualModel:
    """Round the float weights to the integer model's fixed point."""
    def fixed(t: torch.Tensor, bits_: int) -> np.ndarray:
        return torch.round(t.detach().double() * 2.0**bits_).long().numpy()

    unit = WEIGHT_BITS + INPUT_BITS
    ws = fixed(net.ws.weight * net.mask, WEIGHT_BITS)
    b2 = fixed(net.ws.bias, unit)
    f = feature_count(bands)
    if net.w1 is None:
        w1, b1, w2 = np.zeros((0, f), np.int64), np.zeros(0, np.int64), np.zeros((2, 0), np.int64)
    else:
        w1 = fixed(net.w1.weight * net.mask, WEIGHT_BITS)
        b1, w2 = fixed(net.w1.bias, unit), fixed(net.w2.weight, WEIGHT_BITS)
    return ResidualModel(kind, bands, w1, b1, w2, ws, b2, build_tables())


def fit_residual(codec, patches: Sequence[dict], opts: FitOptions | None = None,
                 log=print) -> ResidualModel:
    """The residual model of `codec`'s model, fitted on `patches` ({band: native uint16})."""
    opts = opts or FitOptions()
    assert opts.kind in KINDS
    samples = collect(codec, patches, opts)
    if log:
        log(f"fitting a {opts.kind} residual model on {len(samples[0]):,} samples of "
            f"{len(patches)} patches")
    return to_integer(train(samples, len(codec.bands), opts, log), opts.kind, len(codec.bands))
