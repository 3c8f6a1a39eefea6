"""The oracles and the error bounds the differential tests use.

Tolerance rule (stated once, used everywhere): a computed sum of n products may differ from
the exact value by at most gamma_n * M, where M is the same sum taken over absolute values
and gamma_n = n * eps / (1 - n * eps) (Higham, Accuracy and Stability of Numerical
Algorithms, eq. 3.5). This holds for every summation order, so the bound is tight without
being flaky, and it scales with the data instead of a guessed absolute tolerance. Against
the float64 reference (error ~1e-16 * M) we allow gamma_(n+2) of the tested dtype; against
PyTorch (which has its own rounding) we allow twice that. Max pooling is exact (values and
indices compared for equality).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import fastconv


def gamma(n, dtype):
    u = np.finfo(dtype).eps / 2
    n = n + 2  # the products' own rounding, the bias / final division
    return n * u / (1 - n * u)


def assert_within(actual, expected, magnitude, n_terms, dtype, factor=1.0, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bound = factor * gamma(n_terms, dtype) * np.abs(np.asarray(magnitude, dtype=np.float64))
    # Non-finite values must agree exactly (NaN where NaN, same infinities).
    finite = np.isfinite(expected)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaN positions differ"
    assert np.array_equal(actual[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)]), \
        f"{what}: infinities differ"
    err = np.abs(actual - expected)[finite]
    over = err > bound[finite] + np.finfo(np.float64).tiny
    if over.any():
        i = np.argmax(err - bound[finite])
        raise AssertionError(
            f"{what}: {int(over.sum())} of {err.size} values outside the bound; worst error "
            f"{err[i]:.3g} vs bound {bound[finite][i]:.3g} (n_terms={n_terms}, dtype={np.dtype(dtype).name})"
        )


def ref(fn, *args, **kwargs):
    """fn on the float64 reference backend; array args promoted to float64."""
    args = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    return fn(*args, backend="reference", **kwargs)


def absolute(*arrays):
    return [None if a is None else np.abs(a) for a in arrays]


def t(a, grad=False):
    return None if a is None else torch.tensor(a, requires_grad=grad)


def torch_conv2d(x, w, b, gy, **kw):
    """(y, gx, gw, gb) from torch.autograd."""
    xt, wt, bt = t(x, True), t(w, True), t(b, b is not None)
    y = F.conv2d(xt, wt, bt, **kw)
    y.backward(torch.tensor(gy))
    return (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if b is None else bt.grad.numpy())


def torch_conv_transpose2d(x, w, b, gy, **kw):
    xt, wt, bt = t(x, True), t(w, True), t(b, b is not None)
    y = F.conv_transpose2d(xt, wt, bt, **kw)
    y.backward(torch.tensor(gy))
    return (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if b is None else bt.grad.numpy())


def algorithm_call(primitive, x, w, gy, g):
    """(the inputs of an Algorithm's run for this primitive, the shape of its output)."""
    return {"conv_forward": ((x, w, None), g.y_shape), "conv_backward_data": ((gy, w, None), g.x_shape),
            "conv_backward_weight": ((gy, x), g.w_shape)}[primitive]


def assert_same_bits_at_thread_counts(algorithm, args, shape, dtype, geometry, counts=(1, 2, 3)):
    """algorithm.run(*args, out, geometry, threads) writes every output (they start as NaN) and
    gives the same bits at every thread count."""
    outs = []
    for threads in counts:
        out = np.full(shape, np.nan, dtype)
        algorithm.run(*args, out, geometry, threads)
        outs.append(out)
    assert np.isfinite(outs[0]).all()
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])


def assert_named_algorithm_same_bits(name, primitive, x, wt, rng, stride=1, padding=0, dilation=1, groups=1):
    """The cpp algorithm `name` for `primitive` on conv2d(x, wt, ...) (grad_out drawn from rng):
    assert_same_bits_at_thread_counts, in x's dtype."""
    from fastconv import _params as P
    from fastconv.backends import cpp

    g = P.conv_params(x, wt, None, stride, padding, dilation, groups)[5]
    gy = rng.standard_normal(g.y_shape).astype(x.dtype)
    algo = next(a for a in cpp.ALGORITHMS[primitive] if a.name == name)
    args, shape = algorithm_call(primitive, x, wt, gy, g)
    assert_same_bits_at_thread_counts(algo, args, shape, x.dtype, g)
