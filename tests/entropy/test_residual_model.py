"""The enhancement layer's integer pieces: exact logs, the integer network against its float
twin, the stored tables, and the quantizer's bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqae.codec.enhancement import quantize, step_of
from vqae.codec.residual_fit import FloatResidual, feature_mask, to_integer
from vqae.entropy.residual_features import box3, ls_fit, ls_prediction, resampled
from vqae.entropy.residual_model import (
    ALPHABET,
    FIXED,
    T_MAX,
    T_MIN,
    ResidualModel,
    build_tables,
    feature_count,
    ilog,
    step_log,
)
from vqae.errors import DataError


def test_integer_logs_are_exact_quarter_octaves():
    v = np.array([0, 1, 2, 3, 4, 5, 15, 16, 17, 255, 256, 65535, 1 << 19, -8])
    want = [0] + [math.floor(4 * math.log2(abs(int(a)))) + 1 for a in v[1:]]
    assert ilog(v).tolist() == want
    for step in (1, 3, 5, 9, 17, 33, 65, 131071):
        assert step_log(step) == math.floor(4 * math.log2(step) + 1e-12)


@pytest.mark.parametrize("e", [0, 1, 2, 7, 100])
def test_the_quantizer_keeps_every_residual_within_the_bound(e):
    r = np.arange(-5000, 5001)
    q = quantize(r, e)
    assert np.abs(r - q * step_of(e)).max() <= e
    if e == 0:
        assert (q == r).all()


def test_the_integer_network_follows_its_float_twin():
    torch.manual_seed(0)
    bands = 12
    f = feature_count(bands)
    net = FloatResidual(f, 16, feature_mask("mlp", bands), 3.0)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.5, 0.5)
    model = to_integer(net, "mlp", bands)
    g = torch.randint(-2000, 2000, (500, f))
    mean, tau = model.predict(g.numpy().astype(np.int64))
    out = net(g.float()).detach().numpy()
    assert np.abs(mean - out[:, 0] * 16).max() <= 1.0  # rounding of the fixed point
    assert np.abs(tau - out[:, 1] * 4).max() <= 1.0
    assert mean.dtype == np.int64 and tau.dtype == np.int64
    again = ResidualModel.from_state(model.state(), "m.pt")
    assert again.fingerprint() == model.fingerprint()
    assert (again.predict(g.numpy())[0] == mean).all()


def test_tables_cover_every_index_with_positive_frequencies():
    tables = build_tables()
    assert tables.shape == (T_MAX - T_MIN + 1, ALPHABET) and (tables >= 1).all()
    # a small scale puts most of the mass on zero, a wide one spreads it
    zero = ALPHABET // 2 - 1
    assert tables[0].argmax() == zero and tables[0, zero] > 0.9 * tables[0].sum()
    assert tables[-1, zero] < 0.2 * tables[-1].sum()


def test_static_models_see_only_the_band_and_the_step():
    mask = feature_mask("static", 12)
    assert mask[:12].all() and mask.sum() == 13


def test_a_hostile_state_is_refused():
    torch.manual_seed(0)
    model = to_integer(FloatResidual(feature_count(12), 4, feature_mask("mlp", 12), 2.0),
                       "mlp", 12)
    state = model.state()
    for key, bad in (("tables", state["tables"] * 0), ("w1", state["w1"][:, :3]),
                     ("meta", torch.tensor([9, 12, 4]))):
        with pytest.raises(DataError, match="m.pt.*residual model"):
            ResidualModel.from_state({**state, key: bad}, "m.pt")
    with pytest.raises(DataError, match="malformed"):
        ResidualModel.from_state({k: v for k, v in state.items() if k != "b2"}, "m.pt")


def test_features_resample_and_least_squares_are_integers():
    rho = np.arange(36, dtype=np.int64).reshape(6, 6) - 18
    assert resampled(rho, 3).dtype == np.int64
    assert resampled(rho, 3)[0, 0] == (rho[:2, :2].sum() * FIXED) // 4
    assert (resampled(rho[:3, :3], 6)[::2, ::2] == rho[:3, :3] * FIXED).all()
    assert box3(np.ones((3, 3), np.int64), centre=False)[1, 1] == 8
    assert ls_fit(3 * rho // 2, [rho]).tolist() == [96]  # 1.5 in steps of 1/64
    assert ls_fit(5 * rho, [rho]).tolist() == [127]  # clipped to int8
    assert (ls_prediction([rho * FIXED] + [rho * 0] * 2, np.array([64, 0, 0])) == rho * FIXED).all()
