"""SGD with momentum and Adam, with torch.optim's update rules, updating arrays in place."""
from __future__ import annotations

import math

from .. import _native
from .._params import array_module


class Optimizer:
    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimise")

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD: buf = momentum * buf + grad (+ weight_decay * p); p -= lr * buf."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers = [None] * len(self.params)

    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                if self.buffers[i] is None:
                    self.buffers[i] = g.copy()
                else:
                    self.buffers[i] *= self.momentum
                    self.buffers[i] += g
                g = self.buffers[i]
            p.data -= self.lr * g


class Adam(Optimizer):
    """torch.optim.Adam (no weight decay, no amsgrad): p -= lr * m_hat / (sqrt(v_hat) + eps).

    Written as p -= (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps), with c1, c2 the bias
    corrections: five in-place array operations. The parameters of one array library and
    dtype are moved into one flat buffer (their .data become views of it), so a step is those
    operations once over all of them rather than once per parameter (an MNIST step: 10
    parameters, ~0.4 ms of numpy calls before). A parameter whose .data was since replaced, or
    that has no gradient, is updated (or skipped, as torch does) on its own; like torch, each
    parameter counts its own steps for the bias corrections."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        kinds = {}
        for p in self.params:
            kinds.setdefault((array_module(p.data), p.data.dtype), []).append(p)
        self.groups = [_FlatGroup(xp, dtype, ps) for (xp, dtype), ps in kinds.items()]

    def _scales(self, t):
        b1, b2 = self.betas
        return self.lr / (1 - b1 ** t), 1 / math.sqrt(1 - b2 ** t)

    def step(self):
        b1, b2 = self.betas
        for group in self.groups:
            if group.intact():
                t = group.steps[0] + 1
                group.steps = [t] * len(group.steps)
                group.gather_grads()
                _adam_update(group.xp, group.param, group.grad, group.m, group.v, group.scratch,
                             b1, b2, *self._scales(t), self.eps)
                continue
            for i, (p, (m, v, s)) in enumerate(zip(group.params, group.state_views())):
                if p.grad is not None:
                    group.steps[i] += 1
                    _adam_update(group.xp, p.data, p.grad, m, v, s, b1, b2, *self._scales(group.steps[i]), self.eps)


def _adam_update(xp, p, g, m, v, s, b1, b2, step_size, v_scale, eps):
    if _native.available(p, g, m, v) and p.dtype == g.dtype == m.dtype == v.dtype:
        return _native.adam_update(p, g, m, v, b1, b2, step_size, v_scale, eps)  # the same, in one pass
    m += (1 - b1) * (g - m)          # m = b1 m + (1 - b1) g
    xp.multiply(g, g, out=s)
    v += (1 - b2) * (s - v)          # v = b2 v + (1 - b2) g^2
    xp.sqrt(v, out=s)
    s *= v_scale
    s += eps
    xp.divide(m, s, out=s)
    s *= step_size
    p -= s


class _FlatGroup:
    """Parameters of one array library and dtype, their .data re-homed as views of one flat
    buffer, and Adam's state as flat buffers beside it."""

    def __init__(self, xp, dtype, params):
        self.xp, self.params = xp, params
        sizes = [p.data.size for p in params]
        self.slices, start = [], 0
        for n in sizes:
            self.slices.append(slice(start, start + n))
            start += n
        self.param = xp.empty(start, dtype)
        self.views = []
        for p, sl in zip(params, self.slices):
            self.param[sl] = p.data.ravel()
            p.data = self.param[sl].reshape(p.data.shape)
            self.views.append(p.data)
        self.m, self.v = xp.zeros(start, dtype), xp.zeros(start, dtype)
        self.steps = [0] * len(params)  # Adam steps taken, per parameter
        self.grad, self.scratch = xp.empty(start, dtype), xp.empty(start, dtype)

    def intact(self):
        """Every parameter still holds its view, has a gradient and took as many steps."""
        return (all(p.data is view and p.grad is not None for p, view in zip(self.params, self.views))
                and self.steps.count(self.steps[0]) == len(self.steps))

    def gather_grads(self):
        for p, sl in zip(self.params, self.slices):
            self.grad[sl] = p.grad.ravel()

    def state_views(self):
        for p, sl in zip(self.params, self.slices):
            shape = p.data.shape
            yield self.m[sl].reshape(shape), self.v[sl].reshape(shape), self.scratch[sl].reshape(shape)
