"""Rate-distortion curves: the Pareto front of a set of points, and the Bjøntegaard delta rate.

BD-rate: the mean difference of log10(rate) between two curves, as functions of PSNR, over the
PSNR range where both exist, as a percentage (negative: fewer bits for the same PSNR).
log-rate is interpolated piecewise linearly between measured points (no cubic fit that can
overshoot on the few points of an RVQ depth sweep); each curve is first reduced to its front.
An overlap under MIN_SPAN dB gives no BD-rate (an average over a sliver says nothing); the rate
of the anchor at a single point's PSNR (`rate_at`), or its PSNR at the point's rate (`psnr_at`),
compares such points instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SPAN = 0.5  # dB of PSNR two curves must share for a BD-rate


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, psnr) points not beaten by a point of lower-or-equal rate, by increasing rate."""
    out: list[tuple[float, float]] = []
    for rate, quality in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or quality > out[-1][1]:
            out.append((rate, quality))
    return out


@dataclass(frozen=True)
class BdRate:
    percent: float  # rate change of the test curve against the anchor
    low: float  # PSNR range of the comparison, dB
    high: float


def bd_rate(test: list[tuple[float, float]], anchor: list[tuple[float, float]],
            samples: int = 512, within: tuple[float, float] | None = None) -> BdRate | None:
    """BD-rate of `test` against `anchor` ((rate, psnr) points), None when their PSNR ranges
    share less than MIN_SPAN dB (or a curve has fewer than 2 points); `within` (low, high dB)
    narrows the range to that window."""
    a, b = front(test), front(anchor)
    if len(a) < 2 or len(b) < 2:
        return None
    low, high = max(a[0][1], b[0][1]), min(a[-1][1], b[-1][1])
    if within is not None:
        low, high = max(low, within[0]), min(high, within[1])
    if high - low < MIN_SPAN:
        return None
    grid = np.linspace(low, high, samples)

    def log_rate(curve):
        rate, quality = np.array(curve).T
        return np.interp(grid, quality, np.log10(rate))

    diff = float(np.mean(log_rate(a) - log_rate(b)))
    return BdRate(percent=100.0 * (10.0 ** diff - 1.0), low=low, high=high)


def rate_at(curve: list[tuple[float, float]], quality: float) -> float | None:
    """The rate of a curve's front at a PSNR (log-rate interpolated), None outside its range."""
    points = front(curve)
    if not points or not points[0][1] <= quality <= points[-1][1]:
        return None
    rate, psnr = np.array(points).T
    return float(10.0 ** np.interp(quality, psnr, np.log10(rate)))


def psnr_at(curve: list[tuple[float, float]], rate: float) -> float | None:
    """The PSNR of a curve's front at a rate (interpolated in log-rate), None outside the rates
    it measured: a single point of another codec is compared there, never extrapolated."""
    points = front(curve)
    if not points or not points[0][0] <= rate <= points[-1][0]:
        return None
    rates, psnr = np.array(points).T
    return float(np.interp(np.log10(rate), np.log10(rates), psnr))


def shared_span(test: list[tuple[float, float]], anchor: list[tuple[float, float]]) -> float:
    """dB of PSNR both curves' fronts reach (0 when they do not meet)."""
    if not test or not anchor:
        return 0.0
    (a_low, a_high), (b_low, b_high) = psnr_span(front(test)), psnr_span(front(anchor))
    return max(0.0, min(a_high, b_high) - max(a_low, b_low))


def psnr_span(points: list[tuple[float, float]]) -> tuple[float, float]:
    quality = [p[1] for p in points]
    return min(quality), max(quality)
