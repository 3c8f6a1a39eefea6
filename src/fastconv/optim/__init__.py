"""SGD with momentum and Adam, with torch.optim's update rules, updating arrays in place."""
from __future__ import annotations

import math

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
    corrections, so each step is five in-place array operations per parameter."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m = [array_module(p.data).zeros_like(p.data) for p in self.params]
        self.v = [array_module(p.data).zeros_like(p.data) for p in self.params]
        self.scratch = [array_module(p.data).empty_like(p.data) for p in self.params]

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        step_size, v_scale = self.lr / c1, 1 / math.sqrt(c2)
        for p, m, v, s in zip(self.params, self.m, self.v, self.scratch):
            g = p.grad
            if g is None:
                continue
            xp = array_module(g)
            m += (1 - b1) * (g - m)          # m = b1 m + (1 - b1) g
            xp.multiply(g, g, out=s)
            v += (1 - b2) * (s - v)          # v = b2 v + (1 - b2) g^2
            xp.sqrt(v, out=s)
            s *= v_scale
            s += self.eps
            xp.divide(m, s, out=s)
            s *= step_size
            p.data -= s
