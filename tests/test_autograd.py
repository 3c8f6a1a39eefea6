"""Every autograd Function against torch.autograd (forward and gradients) and finite differences.

One helper, `check`, does both for a case: the fastconv function and the torch function get
the same float64 inputs; the output is contracted with a fixed random cotangent, and the
gradients of every input that requires one are compared. Finite differences (central, float64)
probe a few entries of each input.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CPU_BACKENDS
from fastconv.autograd import Tensor, functional as F, no_grad

BACKENDS = ["reference"] + CPU_BACKENDS


def check(fc_fn, torch_fn, inputs, grads=None, probes=4, rtol=1e-7, atol=1e-9, fd_rtol=1e-4):
    """inputs: float64 arrays; grads: which of them require a gradient (default all)."""
    rng = np.random.default_rng(7)
    grads = [True] * len(inputs) if grads is None else grads
    fc_in = [Tensor(a.copy(), requires_grad=g) for a, g in zip(inputs, grads)]
    out = fc_fn(*fc_in)
    cot = rng.standard_normal(out.shape)
    out.backward(cot)

    t_in = [torch.tensor(a, requires_grad=g) for a, g in zip(inputs, grads)]
    t_out = torch_fn(*t_in)
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=rtol, atol=atol, err_msg="forward")
    t_out.backward(torch.from_numpy(cot))
    for i, (a, t, g) in enumerate(zip(fc_in, t_in, grads)):
        if not g:
            assert a.grad is None
            continue
        np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"grad of input {i}")

    def objective(arrays):
        with no_grad():
            return float((fc_fn(*[Tensor(x) for x in arrays]).data * cot).sum())

    for i, (a, g) in enumerate(zip(inputs, grads)):
        if not g:
            continue
        for flat in rng.choice(a.size, size=min(probes, a.size), replace=False):
            eps = 1e-6 * max(1.0, abs(a.flat[flat]))
            plus, minus = [x.copy() for x in inputs], [x.copy() for x in inputs]
            plus[i].flat[flat] += eps
            minus[i].flat[flat] -= eps
            numeric = (objective(plus) - objective(minus)) / (2 * eps)
            np.testing.assert_allclose(fc_in[i].grad.flat[flat], numeric, rtol=fd_rtol, atol=1e-6,
                                       err_msg=f"finite difference, input {i}, entry {flat}")


@pytest.fixture
def r():
    return np.random.default_rng(0)


def randn(r, *shape):
    return r.standard_normal(shape)


# --------------------------------------------------------------------------- fastconv ops

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                dict(stride=(2, 1), padding=(0, 1), groups=2)])
def test_conv2d(r, backend, kw):
    x, w, b = randn(r, 2, 4, 9, 8), randn(r, 6, 4 // kw.get("groups", 1), 3, 3), randn(r, 6)
    check(lambda x, w, b: F.conv2d(x, w, b, **kw, backend=backend),
          lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **kw), [x, w, b])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grads", [(False, True, True), (True, False, False), (True, True, False)])
def test_conv2d_partial_gradients(r, backend, grads):
    x, w, b = randn(r, 2, 3, 7, 7), randn(r, 5, 3, 3, 3), randn(r, 5)
    check(lambda x, w, b: F.conv2d(x, w, b, padding=1, backend=backend),
          lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=1), [x, w, b], grads=list(grads))


def test_conv2d_without_bias(r):
    check(lambda x, w: F.conv2d(x, w), lambda x, w: torch.nn.functional.conv2d(x, w),
          [randn(r, 1, 2, 5, 5), randn(r, 3, 2, 2, 2)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(stride=2, padding=1, output_padding=1, groups=2),
                                dict(stride=3, dilation=2)])
def test_conv_transpose2d(r, backend, kw):
    x, w, b = randn(r, 2, 4, 5, 6), randn(r, 4, 6 // kw.get("groups", 1), 4, 4), randn(r, 6)
    check(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw, backend=backend),
          lambda x, w, b: torch.nn.functional.conv_transpose2d(x, w, b, **kw), [x, w, b])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("args", [(2,), (3, 2, 1), (3, 2, 0, 2, True)])
def test_max_pool2d(r, backend, args):
    check(lambda x: F.max_pool2d(x, *args, backend=backend),
          lambda x: torch.nn.functional.max_pool2d(x, *args), [randn(r, 2, 3, 11, 10)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("args", [(2,), (3, 2, 1, False, False), (3, 2, 1, True, True, 5)])
def test_avg_pool2d(r, backend, args):
    check(lambda x: F.avg_pool2d(x, *args, backend=backend),
          lambda x: torch.nn.functional.avg_pool2d(x, *args), [randn(r, 2, 3, 11, 10)])


# --------------------------------------------------------------------------- dense and elementwise

def test_linear(r):
    check(F.linear, torch.nn.functional.linear, [randn(r, 5, 7), randn(r, 3, 7), randn(r, 3)])
    check(F.linear, torch.nn.functional.linear, [randn(r, 5, 7), randn(r, 3, 7), randn(r, 3)],
          grads=[False, True, True])


def test_matmul(r):
    check(lambda a, b: a @ b, lambda a, b: a @ b, [randn(r, 4, 6), randn(r, 6, 3)])


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((4, 5), (5,))])
def test_add_mul_broadcast(r, shapes):
    a, b = randn(r, *shapes[0]), randn(r, *shapes[1])
    check(lambda a, b: a + b, lambda a, b: a + b, [a, b])
    check(lambda a, b: a * b, lambda a, b: a * b, [a, b])
    check(lambda a, b: a - b, lambda a, b: a - b, [a, b])


def test_scalar_operands(r):
    check(lambda a: 2.0 * a + 1.0, lambda a: 2.0 * a + 1.0, [randn(r, 3, 4)])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "leaky_relu"])
def test_activations(r, name):
    x = randn(r, 3, 4, 5) * 3
    torch_fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.2)}[name]
    fc_fn = (lambda t: F.leaky_relu(t, 0.2)) if name == "leaky_relu" else getattr(F, name)
    check(fc_fn, torch_fn, [x])


def test_sigmoid_large_logits_do_not_overflow():
    y = F.sigmoid(Tensor(np.array([-1e4, 0.0, 1e4], np.float32))).data
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0])


def test_reshape_flatten(r):
    check(lambda x: F.reshape(x, (6, -1)), lambda x: x.reshape(6, -1), [randn(r, 2, 3, 4, 5)])
    check(F.flatten, lambda x: x.flatten(1), [randn(r, 2, 3, 4, 5)])


def test_dropout_scales_kept_and_zeroes_dropped(r):
    x = randn(r, 50, 40)
    scale = F.dropout(Tensor(np.ones_like(x)), 0.3, rng=np.random.default_rng(3)).data
    assert set(np.unique(scale)) == {0.0, 1 / 0.7}
    assert abs((scale == 0).mean() - 0.3) < 0.03
    check(lambda x: F.dropout(x, 0.3, rng=np.random.default_rng(3)), lambda x: x * torch.from_numpy(scale), [x])
    assert F.dropout(Tensor(x), 0.3, training=False).data is x


# --------------------------------------------------------------------------- batch norm

@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(r, shape, training):
    c = shape[1]
    rm, rv = randn(r, c), r.uniform(0.5, 2, c)
    fc_rm, fc_rv, t_rm, t_rv = rm.copy(), rv.copy(), torch.tensor(rm), torch.tensor(rv)
    x = randn(r, *shape) * 2 + 1
    kw = dict(training=training, momentum=0.1, eps=1e-5)
    check(lambda x, w, b: F.batch_norm(x, fc_rm, fc_rv, w, b, **kw),
          lambda x, w, b: torch.nn.functional.batch_norm(x, t_rm, t_rv, w, b, **kw),
          [x, r.uniform(0.5, 1.5, c), randn(r, c)], probes=3)
    # check() runs the forward several times (finite differences), so compare one fresh update.
    fc_rm[:], fc_rv[:], t_rm[:], t_rv[:] = rm, rv, torch.tensor(rm), torch.tensor(rv)
    F.batch_norm(Tensor(x), fc_rm, fc_rv, Tensor(np.ones(c)), Tensor(np.zeros(c)), **kw)
    torch.nn.functional.batch_norm(torch.tensor(x), t_rm, t_rv, torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), **kw)
    np.testing.assert_allclose(fc_rm, t_rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(fc_rv, t_rv.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- losses

def test_cross_entropy(r):
    targets = r.integers(0, 7, 9)
    check(lambda z: F.cross_entropy(z, targets),
          lambda z: torch.nn.functional.cross_entropy(z, torch.from_numpy(targets)), [randn(r, 9, 7) * 5])


def test_bce_with_logits(r):
    check(F.bce_with_logits, torch.nn.functional.binary_cross_entropy_with_logits,
          [randn(r, 6, 1) * 10, r.uniform(0, 1, (6, 1))], grads=[True, False])
    check(F.bce_with_logits, torch.nn.functional.binary_cross_entropy_with_logits,
          [randn(r, 6, 3), r.uniform(0, 1, (6, 3))])
    weight = r.uniform(0, 2, (1, 3))
    check(lambda z, t: F.bce_with_logits(z, t, weight),
          lambda z, t: torch.nn.functional.binary_cross_entropy_with_logits(z, t, torch.from_numpy(weight)),
          [randn(r, 6, 3), r.uniform(0, 1, (6, 3))])


def test_mse(r):
    check(F.mse, torch.nn.functional.mse_loss, [randn(r, 3, 1, 4, 4), randn(r, 3, 1, 4, 4)])


# --------------------------------------------------------------------------- the engine

def test_gradients_accumulate_over_shared_subgraphs(r):
    """A diamond (x used twice, the product reused) and a second backward that adds."""
    x_data = randn(r, 3, 4)

    def f(x):
        y = x * x
        return y * y + y + x

    check(f, f, [x_data])
    x = Tensor(x_data, requires_grad=True)
    f(x).backward(np.ones((3, 4)))
    first = x.grad.copy()
    f(x).backward(np.ones((3, 4)))
    np.testing.assert_allclose(x.grad, 2 * first)


def test_no_grad_records_nothing(r):
    w = Tensor(randn(r, 3, 3), requires_grad=True)
    with no_grad():
        y = w * 2.0
    assert not y.requires_grad and y._node is None


def test_backward_needs_a_scalar_or_a_gradient(r):
    with pytest.raises(ValueError, match="scalar"):
        (Tensor(randn(r, 3), requires_grad=True) * 2.0).backward()


def test_deep_chain_does_not_recurse():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_float32_stays_float32(r):
    x = Tensor(randn(r, 2, 1, 6, 6).astype(np.float32))
    w = Tensor(randn(r, 4, 1, 3, 3).astype(np.float32), requires_grad=True)
    loss = F.mse(F.sigmoid(F.conv2d(x, w, padding=1)), np.zeros((2, 4, 6, 6), np.float32))
    assert loss.dtype == np.float32
    loss.backward()
    assert w.grad.dtype == np.float32
