"""conv2d and conv_transpose2d, forward and backward, on every backend: against the float64
reference (float64 and float32) and against PyTorch (float64), over a grid that covers
every parameter. Bounds: see oracle.py."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from conftest import call
from oracle import absolute, assert_within, ref, torch_conv2d, torch_conv_transpose2d

# (N, C, H, W, K, R, S, kwargs)
CONV_CASES = [
    (2, 3, 9, 8, 4, 3, 3, {}),
    (2, 3, 9, 8, 4, 3, 3, dict(stride=2)),
    (2, 3, 9, 8, 4, 3, 2, dict(stride=(2, 1), padding=(1, 2))),
    (1, 4, 10, 11, 6, 3, 3, dict(padding=1, dilation=2)),
    (2, 4, 10, 11, 6, 2, 3, dict(padding=(0, 1), dilation=(1, 2), stride=(1, 3))),
    (2, 4, 9, 9, 6, 3, 3, dict(groups=2, padding=1)),
    (2, 6, 9, 9, 6, 3, 3, dict(groups=6, padding=1)),  # depthwise
    (1, 6, 12, 12, 12, 3, 3, dict(groups=6, stride=2, padding=1)),  # depthwise x2 multiplier
    (2, 3, 8, 7, 5, 4, 4, dict(padding="same")),  # even kernel: asymmetric padding
    (2, 3, 8, 7, 5, 3, 2, dict(padding="same", dilation=(2, 3))),
    (2, 3, 8, 7, 5, 3, 3, dict(padding="valid")),
    (2, 3, 7, 7, 4, 1, 1, {}),  # 1x1
    (2, 8, 9, 9, 16, 1, 1, dict(stride=2)),  # 1x1 stride 2
    (1, 3, 17, 17, 8, 7, 7, dict(stride=2, padding=3)),  # 7x7 s2 stem
    (3, 3, 16, 16, 8, 4, 4, dict(stride=2, padding=1)),  # DCGAN discriminator
    (1, 32, 24, 24, 13, 3, 3, dict(padding=1)),  # kd > 256 (k blocking), several row blocks and tiles
    (2, 1, 28, 28, 7, 3, 3, {}),  # C = 1 first layer
    (1, 5, 6, 6, 3, 6, 6, {}),  # kernel == input
    (1, 2, 3, 3, 2, 5, 5, dict(padding=2)),  # kernel > input, padding makes room
]


def _conv_ids(case):
    n, c, h, w, k, r, s, kw = case
    return f"{n}x{c}x{h}x{w}-{k}x{r}x{s}-" + ",".join(f"{a}={b}" for a, b in kw.items())


def _data(rng, shape_x, shape_w, k_bias, dtype, bias=True):
    x = rng.standard_normal(shape_x).astype(dtype)
    w = rng.standard_normal(shape_w).astype(dtype)
    b = rng.standard_normal(k_bias).astype(dtype) if bias else None
    return x, w, b


def check_conv2d(backend, x, w, b, dtype, **kw):
    groups = kw.get("groups", 1)
    y = call(backend, fastconv.conv2d, x, w, b, **kw)
    y_ref = ref(fastconv.conv2d, x, w, b, **kw)
    ax, aw, ab = absolute(x, w, b)
    y_mag = ref(fastconv.conv2d, ax, aw, ab, **kw)
    cg_taps = w.shape[1] * w.shape[2] * w.shape[3]
    assert y.dtype == dtype
    assert_within(y, y_ref, y_mag, cg_taps, dtype, what="conv2d forward")

    gy = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    gx, gw, gb = call(backend, fastconv.conv2d_backward, gy, x, w, b, **kw)
    rx, rw, rb = ref(fastconv.conv2d_backward, gy, x, w, b, **kw)
    mx, mw, _ = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)
    kg_taps = w.shape[0] // groups * w.shape[2] * w.shape[3]
    n_pix = (x.shape[0] if x.ndim == 4 else 1) * y.shape[-2] * y.shape[-1]
    assert_within(gx, rx, mx, kg_taps, dtype, what="conv2d grad_x")
    assert_within(gw, rw, mw, n_pix, dtype, what="conv2d grad_weight")
    if b is None:
        assert gb is None
    else:
        assert_within(gb, rb, ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)[2], n_pix, dtype,
                      what="conv2d grad_bias")
    return y, gy, (gx, gw, gb)


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_ids)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_reference(backend, rng, case, dtype, bias):
    n, c, h, w_, k, r, s, kw = case
    groups = kw.get("groups", 1)
    x, w, b = _data(rng, (n, c, h, w_), (k, c // groups, r, s), k, dtype, bias)
    check_conv2d(backend, x, w, b, dtype, **kw)


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_ids)
def test_conv2d_matches_torch(backend, rng, case):
    n, c, h, w_, k, r, s, kw = case
    groups = kw.get("groups", 1)
    x, w, b = _data(rng, (n, c, h, w_), (k, c // groups, r, s), k, np.float64)
    y, gy, grads = check_conv2d(backend, x, w, b, np.float64, **kw)
    expected = torch_conv2d(x, w, b, gy, **kw)
    ax, aw, ab = absolute(x, w, b)
    y_mag = ref(fastconv.conv2d, ax, aw, ab, **kw)
    mx, mw, mb = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **kw)
    n_terms = max(c * r * s, k * r * s, n * y.shape[-2] * y.shape[-1])
    for got, want, mag, name in zip((y, *grads), expected, (y_mag, mx, mw, mb), ("y", "gx", "gw", "gb")):
        assert_within(got, want, mag, n_terms, np.float64, factor=2, what=f"conv2d {name} vs torch")


# (N, C_in, H, W, C_out, R, S, kwargs)
TRANSPOSED_CASES = [
    (2, 3, 5, 6, 4, 3, 3, {}),
    (2, 3, 5, 6, 4, 4, 4, dict(stride=2, padding=1)),  # DCGAN generator
    (2, 3, 5, 6, 4, 3, 3, dict(stride=2, padding=1, output_padding=1)),
    (2, 4, 4, 5, 6, 3, 2, dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1))),
    (1, 4, 5, 5, 6, 3, 3, dict(dilation=2, padding=2)),
    (1, 4, 5, 5, 4, 3, 3, dict(stride=1, dilation=2, output_padding=1)),  # output_padding >= stride
    (2, 4, 5, 5, 6, 3, 3, dict(groups=2, stride=2)),
    (2, 4, 5, 5, 4, 3, 3, dict(groups=4, stride=2, padding=1, output_padding=1)),  # depthwise
    (2, 4, 6, 6, 8, 2, 2, dict(stride=2)),  # 2x2 s2 (U-Net up-sampling)
    (1, 8, 7, 7, 3, 4, 4, dict(stride=2, padding=1)),  # to 3 channels
    (1, 2, 4, 4, 3, 5, 5, dict(stride=2, dilation=2, padding=3)),  # stride and dilation share a factor
    (1, 20, 9, 9, 7, 4, 4, dict(stride=2, padding=1)),  # kd > 256 in a phase
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=_conv_ids)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose2d_matches_reference_and_torch(backend, rng, case, dtype, bias):
    n, cin, h, w_, cout, r, s, kw = case
    groups = kw.get("groups", 1)
    x, w, b = _data(rng, (n, cin, h, w_), (cin, cout // groups, r, s), cout, dtype, bias)
    y = call(backend, fastconv.conv_transpose2d, x, w, b, **kw)
    ax, aw, ab = absolute(x, w, b)
    fwd_terms = cin // groups * r * s
    assert_within(y, ref(fastconv.conv_transpose2d, x, w, b, **kw), ref(fastconv.conv_transpose2d, ax, aw, ab, **kw),
                  fwd_terms, dtype, what="conv_transpose2d forward")

    gy = rng.standard_normal(y.shape).astype(dtype)
    got = call(backend, fastconv.conv_transpose2d_backward, gy, x, w, b, **kw)
    want = ref(fastconv.conv_transpose2d_backward, gy, x, w, b, **kw)
    mags = ref(fastconv.conv_transpose2d_backward, np.abs(gy), ax, aw, ab, **kw)
    terms = (cout // groups * r * s, n * h * w_, n * y.shape[-2] * y.shape[-1])
    for g, wnt, mag, nt, name in zip(got, want, mags, terms, ("gx", "gw", "gb")):
        if b is None and name == "gb":
            assert g is None
            continue
        assert_within(g, wnt, mag, nt, dtype, what=f"conv_transpose2d {name}")

    if dtype == np.float64:
        expected = torch_conv_transpose2d(x, w, b, gy, **kw)
        n_terms = max(fwd_terms, *terms)
        for g, wnt, mag, name in zip((y, *got), expected, (ref(fastconv.conv_transpose2d, ax, aw, ab, **kw), *mags),
                                     ("y", "gx", "gw", "gb")):
            if wnt is None:
                continue
            assert_within(g, wnt, mag, n_terms, dtype, factor=2, what=f"conv_transpose2d {name} vs torch")


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True),
                                   (False, False, False)])
def test_backward_needs_skips_gradients(backend, rng, needs):
    x, w, b = _data(rng, (2, 3, 6, 6), (4, 3, 3, 3), 4, np.float64)
    gy = rng.standard_normal((2, 4, 4, 4))
    full = call(backend, fastconv.conv2d_backward, gy, x, w, b)
    part = call(backend, fastconv.conv2d_backward, gy, x, w, b, needs=needs)
    for want, got, need in zip(full, part, needs):
        assert (got is None) != need
        if need:
            np.testing.assert_array_equal(got, want)
    xt = rng.standard_normal((2, 4, 4, 4))
    full = call(backend, fastconv.conv_transpose2d_backward, gy[:, :3, :3, :3], xt[:, :, :1, :1], w, None)
    assert full[2] is None  # no bias, no bias gradient


def test_unbatched_input(backend, rng):
    x, w, b = _data(rng, (3, 7, 7), (4, 3, 3, 3), 4, np.float64)
    y = call(backend, fastconv.conv2d, x, w, b, padding=1)
    assert y.shape == (4, 7, 7)
    np.testing.assert_allclose(y, call(backend, fastconv.conv2d, x[None], w, b, padding=1)[0], rtol=0, atol=0)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = call(backend, fastconv.conv2d_backward, gy, x, w, b, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    wt = rng.standard_normal((3, 2, 3, 3))
    yt = call(backend, fastconv.conv_transpose2d, x, wt, None, stride=2)
    assert yt.shape == (2, 15, 15)
    gxt, gwt, _ = call(backend, fastconv.conv_transpose2d_backward, rng.standard_normal(yt.shape), x, wt, None, stride=2)
    assert gxt.shape == x.shape and gwt.shape == wt.shape


def test_empty_batch(backend, rng):
    x = np.zeros((0, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    y = call(backend, fastconv.conv2d, x, w, np.ones(4))
    assert y.shape == (0, 4, 6, 6)
    gx, gw, gb = call(backend, fastconv.conv2d_backward, np.zeros((0, 4, 6, 6)), x, w, np.ones(4))
    assert gx.shape == (0, 3, 8, 8)
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros(4))
    yt = call(backend, fastconv.conv_transpose2d, np.zeros((0, 4, 6, 6)), w, None)
    assert yt.shape == (0, 3, 8, 8)


def test_non_contiguous_input_is_made_contiguous(backend, rng):
    base = rng.standard_normal((2, 8, 3, 10))
    x = base.transpose(0, 2, 1, 3)[:, :, ::2, :]  # (2, 3, 4, 10), strided
    w = rng.standard_normal((5, 3, 3, 3))[:, :, ::-1, :]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y = call(backend, fastconv.conv2d, x, w, padding=1)
    np.testing.assert_allclose(y, ref(fastconv.conv2d, np.ascontiguousarray(x), np.ascontiguousarray(w), padding=1),
                               rtol=1e-12, atol=1e-12)


def test_non_finite_inputs_match_torch(backend, rng):
    x, w, b = _data(rng, (2, 3, 8, 8), (4, 3, 3, 3), 4, np.float64)
    x[0, 1, 2, 3] = np.nan
    x[1, 0, 5, 5] = np.inf
    x[1, 2, 0, 0] = -np.inf
    y = call(backend, fastconv.conv2d, x, w, b, padding=1)
    gy = rng.standard_normal(y.shape)
    expected = torch_conv2d(x, w, b, gy, padding=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected[0]))
    finite = np.isfinite(expected[0])
    np.testing.assert_allclose(y[finite], expected[0][finite], rtol=1e-12, atol=1e-12)
    gx, gw, gb = call(backend, fastconv.conv2d_backward, gy, x, w, b, padding=1)
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(expected[2]))
    np.testing.assert_allclose(gx, expected[1], rtol=1e-12, atol=1e-12)  # grad_x does not see x

