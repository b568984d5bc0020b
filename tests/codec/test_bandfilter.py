"""Band filter fitting at the edges the patch-level tests in test_codec.py do not reach."""

from __future__ import annotations

import numpy as np

from vqae.codec import bandfilter


def nearly_collinear(seed: int = 95):
    """One patch of three decoded bands that are one band plus 5 DN of noise each (a Gram matrix
    of condition number ~1e3), and originals 5 DN away: (1, 3, 8, 8) float64 each."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 100, (1, 1, 8, 8))
    decoded = 1000 + base + rng.normal(0, 5, (1, 3, 8, 8))
    original = decoded + rng.normal(0, 5, (1, 3, 8, 8))
    return original, decoded


def test_band_mix_keeps_a_band_as_decoded_where_the_lattice_fit_is_worse():
    """Coordinate descent over int8 codes stops, for band 2 of this patch, at a lattice point
    worse than the identity row (the valley of an ill-conditioned Gram matrix is diagonal to
    the lattice); the guard then leaves that band as decoded, and only that band."""
    original, decoded = nearly_collinear()
    p = decoded.mean(axis=(-2, -1), keepdims=True)  # the pivot without header means
    r, x = (decoded - p).reshape(3, -1), (original - p).reshape(3, -1)  # (C, pixels)
    gram, cross = r @ r.T, x @ r.T
    identity = np.eye(3, dtype=np.int64) * bandfilter.MIX_STEP

    codes = bandfilter.fit_mix(gram, cross)
    np.testing.assert_array_equal(codes[2], identity[2])
    assert (codes[:2] != identity[:2]).any(axis=1).all()  # the other bands keep their mix
    real = np.linalg.solve(gram, cross.T).T * bandfilter.MIX_STEP  # least squares, in codes
    assert (np.rint(real[2]) != identity[2]).any()  # identity is the guard's choice, not rounding
    assert (bandfilter.row_error(codes, gram, cross)
            <= bandfilter.row_error(identity, gram, cross)).all()

    # the same through fit(), measured on the pixels: no band's error above the decoded band's
    fitted = bandfilter.fit("mix", original, decoded, None)
    np.testing.assert_array_equal(fitted.reshape(3, 3), codes)
    m = bandfilter.matrices("mix", fitted, 3)[0]
    out = p[0] + np.einsum("ij,jhw->ihw", m, decoded[0] - p[0])  # (3, 8, 8) float64
    error = ((out - original[0]) ** 2).mean(axis=(-2, -1))
    assert (error <= ((decoded[0] - original[0]) ** 2).mean(axis=(-2, -1)) + 1e-9).all()
