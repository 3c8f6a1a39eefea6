"""Random parameter combinations (hypothesis): every backend against the float64 reference,
forward and all gradients, for conv2d, conv_transpose2d and both pools."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from conftest import BACKENDS, call
from oracle import absolute, assert_within, ref

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pairs(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = draw(pairs(1, 3))
    dh, dw = _pair(dilation)
    if draw(st.booleans()):
        stride, padding = 1, draw(st.sampled_from(["same", "valid"]))
        pad_h = pad_w = 0
    else:
        stride, padding = draw(pairs(1, 3)), draw(pairs(0, 3))
        pad_h, pad_w = _pair(padding)
    min_h = max(1, dh * (r - 1) + 1 - 2 * pad_h)
    min_w = max(1, dw * (s - 1) + 1 - 2 * pad_w)
    h, w = draw(st.integers(min_h, min_h + 9)), draw(st.integers(min_w, min_w + 9))
    n = draw(st.integers(0, 2))
    return dict(shape_x=(n, c, h, w), shape_w=(k, c // groups, r, s), groups=groups, stride=stride,
                padding=padding, dilation=dilation, bias=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(problem=conv_problems())
def test_conv2d_random(problem):
    p = dict(problem)
    rng = np.random.default_rng(p.pop("seed"))
    dtype = p.pop("dtype")
    x = rng.standard_normal(p.pop("shape_x")).astype(dtype)
    w = rng.standard_normal(p.pop("shape_w")).astype(dtype)
    b = rng.standard_normal(w.shape[0]).astype(dtype) if p.pop("bias") else None
    y_ref = ref(fastconv.conv2d, x, w, b, **p)
    ax, aw, ab = absolute(x, w, b)
    y_mag = ref(fastconv.conv2d, ax, aw, ab, **p)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    grads_ref = ref(fastconv.conv2d_backward, gy, x, w, b, **p)
    mags = ref(fastconv.conv2d_backward, np.abs(gy), ax, aw, ab, **p)
    terms = (w.shape[0] * w.shape[2] * w.shape[3], x.shape[0] * y_ref.shape[2] * y_ref.shape[3] + 1,
             x.shape[0] * y_ref.shape[2] * y_ref.shape[3] + 1)
    for backend in BACKENDS:
        y = call(backend, fastconv.conv2d, x, w, b, **p)
        assert_within(y, y_ref, y_mag, w[0].size, dtype, what=f"{backend} conv2d")
        for got, want, mag, nt in zip(call(backend, fastconv.conv2d_backward, gy, x, w, b, **p), grads_ref, mags,
                                      terms):
            assert (got is None) == (want is None)
            if got is not None:
                assert_within(got, want, mag, nt, dtype, what=f"{backend} conv2d backward")


@st.composite
def transposed_problems(draw):
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    oph, opw = draw(st.integers(0, max(sh, dh) - 1)), draw(st.integers(0, max(sw, dw) - 1))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    out_h = (h - 1) * sh - 2 * ph + dh * (r - 1) + oph + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (s - 1) + opw + 1
    if out_h <= 0 or out_w <= 0:
        ph = pw = 0
    return dict(shape_x=(draw(st.integers(0, 2)), cin, h, w), shape_w=(cin, cout // groups, r, s), groups=groups,
                stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw), dilation=(dh, dw),
                bias=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(problem=transposed_problems())
def test_conv_transpose2d_random(problem):
    p = dict(problem)
    rng = np.random.default_rng(p.pop("seed"))
    dtype = p.pop("dtype")
    x = rng.standard_normal(p.pop("shape_x")).astype(dtype)
    w = rng.standard_normal(p.pop("shape_w")).astype(dtype)
    b = rng.standard_normal(w.shape[1] * p["groups"]).astype(dtype) if p.pop("bias") else None
    y_ref = ref(fastconv.conv_transpose2d, x, w, b, **p)
    ax, aw, ab = absolute(x, w, b)
    y_mag = ref(fastconv.conv_transpose2d, ax, aw, ab, **p)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    grads_ref = ref(fastconv.conv_transpose2d_backward, gy, x, w, b, **p)
    mags = ref(fastconv.conv_transpose2d_backward, np.abs(gy), ax, aw, ab, **p)
    taps = w.shape[2] * w.shape[3]
    terms = (w.shape[1] * taps, x.shape[0] * x.shape[2] * x.shape[3] + 1,
             x.shape[0] * y_ref.shape[2] * y_ref.shape[3] + 1)
    for backend in BACKENDS:
        y = call(backend, fastconv.conv_transpose2d, x, w, b, **p)
        assert_within(y, y_ref, y_mag, w.shape[0] * taps, dtype, what=f"{backend} conv_transpose2d")
        got_all = call(backend, fastconv.conv_transpose2d_backward, gy, x, w, b, **p)
        for got, want, mag, nt in zip(got_all, grads_ref, mags, terms):
            assert (got is None) == (want is None)
            if got is not None:
                assert_within(got, want, mag, nt, dtype, what=f"{backend} conv_transpose2d backward")


@st.composite
def pool_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 14))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 14))
    return dict(shape=(draw(st.integers(0, 2)), draw(st.integers(1, 3)), h, w), kernel_size=(kh, kw),
                stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), ceil_mode=draw(st.booleans()),
                count_include_pad=draw(st.booleans()),
                divisor_override=draw(st.one_of(st.none(), st.integers(1, 9))),
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(problem=pool_problems())
def test_pools_random(problem):
    p = dict(problem)
    rng = np.random.default_rng(p.pop("seed"))
    dtype = p.pop("dtype")
    x = (np.round(rng.standard_normal(p.pop("shape")) * 4) / 4).astype(dtype)  # ties
    max_kw = {k: p[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
    avg_kw = {k: p[k] for k in ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                "divisor_override")}
    y_ref, idx_ref = ref(fastconv.max_pool2d, x, return_indices=True, **max_kw)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref = ref(fastconv.max_pool2d_backward, gy, x, idx_ref, **max_kw)
    try:
        a_ref = ref(fastconv.avg_pool2d, x, **avg_kw)
    except ValueError:  # dilation made the max pool valid, the (undilated) avg pool may differ
        a_ref = None
    for backend in BACKENDS:
        y, idx = call(backend, fastconv.max_pool2d, x, return_indices=True, **max_kw)
        np.testing.assert_array_equal(y, y_ref.astype(dtype))
        np.testing.assert_array_equal(idx, idx_ref)
        gx = call(backend, fastconv.max_pool2d_backward, gy, x, idx, **max_kw)
        assert_within(gx, gx_ref, ref(fastconv.max_pool2d_backward, np.abs(gy), x, idx_ref, **max_kw),
                      int(np.prod(max_kw["kernel_size"])), dtype, what=f"{backend} max_pool2d backward")
        if a_ref is None:
            continue
        taps = int(np.prod(avg_kw["kernel_size"]))
        assert_within(call(backend, fastconv.avg_pool2d, x, **avg_kw), a_ref,
                      ref(fastconv.avg_pool2d, np.abs(x), **avg_kw), taps, dtype, what=f"{backend} avg_pool2d")
        ga = rng.standard_normal(a_ref.shape).astype(dtype)
        assert_within(call(backend, fastconv.avg_pool2d_backward, ga, x, **avg_kw),
                      ref(fastconv.avg_pool2d_backward, ga, x, **avg_kw),
                      ref(fastconv.avg_pool2d_backward, np.abs(ga), x, **avg_kw), taps, dtype,
                      what=f"{backend} avg_pool2d backward")
