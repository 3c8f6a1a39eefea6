"""The differentiable functions: one Function subclass per op, one plain function to call it.

Convolution and pooling call the public fastconv ops and their public backward functions
(so every backend trains); the rest is array arithmetic that works on numpy and cupy alike.
"""
from __future__ import annotations

import numpy as np

from .. import _native, ops
from .. import _params as P
from .._params import array_module
from ..dispatch import select
from .engine import Function, Tensor, tensor


def _as_tensor(v, like):
    if isinstance(v, Tensor):
        return v
    return Tensor(array_module(like.data).asarray(v, dtype=like.dtype))


def _unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing numpy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


# --------------------------------------------------------------------------- fastconv ops

class Conv2d(Function):
    def forward(self, x, w, b):
        self.x, self.w, self.b = x, w, b
        return ops.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups, backend=self.backend)

    def backward(self, g):
        return ops.conv2d_backward(g, self.x, self.w, self.b, self.stride, self.padding, self.dilation, self.groups,
                                   needs=self.needs, backend=self.backend)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                        backend=backend)


class ConvTranspose2d(Function):
    def forward(self, x, w, b):
        self.x, self.w, self.b = x, w, b
        return ops.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding, self.groups,
                                    self.dilation, backend=self.backend)

    def backward(self, g):
        return ops.conv_transpose2d_backward(g, self.x, self.w, self.b, self.stride, self.padding,
                                             self.output_padding, self.groups, self.dilation,
                                             needs=self.needs, backend=self.backend)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None):
    return ConvTranspose2d.apply(x, weight, bias, stride=stride, padding=padding, output_padding=output_padding,
                                 groups=groups, dilation=dilation, backend=backend)


class MaxPool2d(Function):
    def forward(self, x):
        y, self.indices = ops.max_pool2d(x, *self.args, return_indices=True, backend=self.backend)
        self.x = x
        return y

    def backward(self, g):
        return (ops.max_pool2d_backward(g, self.x, self.indices, *self.args, backend=self.backend),)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None):
    return MaxPool2d.apply(x, args=(kernel_size, stride, padding, dilation, ceil_mode), backend=backend)


class ConvMaxPool2d(Function):
    """max_pool2d(conv2d(x, w, b, padding=padding), 2) in one backend kernel (the cpp backend's
    conv_max_pool.cpp): the conv's output is never stored; `where` keeps each window's winning
    pixel, dh * 2 + dw, for the backward. Gradients equal the two Functions' in sequence."""

    def forward(self, x, w, b):
        self.x, self.w, self.b = x, w, b
        y, self.where = self.impl.conv_max_pool_forward(x, w, b, self.geometry)
        return y

    def backward(self, g):
        need_x, need_w, need_b = self.needs
        # The bias gradient is the sum of grad_out over images and pixels: the pooled one holds
        # the same non-zero values as the conv output's.
        gb = ops.bias_grad(g, backend=self.backend) if need_b and self.b is not None else None
        gw = self.impl.conv_max_pool_backward_weight(g, self.where, self.x, self.geometry) if need_w else None
        gx = None
        if need_x or (need_w and gw is None):  # gw None: x holds an inf or NaN (see conv_max_pool.cpp)
            gx, gw_dense, _ = ops.conv2d_backward(self._dense_grad(g), self.x, self.w, None, 1, self.padding,
                                                  needs=(need_x, need_w and gw is None, False), backend=self.backend)
            gw = gw if gw is not None else gw_dense
        return gx, gw, gb

    def _dense_grad(self, g):
        """The conv output's gradient: g at each window's winning pixel, zero elsewhere."""
        xp = array_module(g)
        n, k, ph, pw = g.shape
        dense = xp.zeros((n, k, self.geometry.out_h, self.geometry.out_w), g.dtype)
        for p in range(4):
            dense[:, :, p // 2:2 * ph:2, p % 2:2 * pw:2] = xp.where(self.where == p, g, 0)
        return dense


def conv2d_max_pool2d(x, weight, bias=None, padding=0, *, backend=None):
    """max_pool2d(conv2d(x, weight, bias, padding=padding), 2) (a stride-1 conv, then 2x2 windows
    at stride 2): one fused kernel where the backend has one that takes this conv (cpp: up to 4
    input channels, batched input), else the two Functions."""
    impl = select(backend, array_module(x.data))
    accepts = getattr(impl, "conv_max_pool_accepts", None)
    if accepts is not None and x.ndim == 4:
        g = P.conv_params(x.data, weight.data, None if bias is None else bias.data, 1, padding, 1, 1)[5]
        if accepts(g) is None:
            return ConvMaxPool2d.apply(x, weight, bias, impl=impl, geometry=g, padding=padding, backend=backend)
    return max_pool2d(conv2d(x, weight, bias, 1, padding, backend=backend), 2, backend=backend)


class AvgPool2d(Function):
    def forward(self, x):
        self.x = x
        return ops.avg_pool2d(x, *self.args, backend=self.backend)

    def backward(self, g):
        return (ops.avg_pool2d_backward(g, self.x, *self.args, backend=self.backend),)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    return AvgPool2d.apply(x, args=(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override),
                           backend=backend)


# --------------------------------------------------------------------------- dense

class Linear(Function):
    """y = x @ weight.T + bias, torch's layout: weight (out_features, in_features)."""

    def forward(self, x, w, b):
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, g):
        need_x, need_w, need_b = self.needs
        return (g @ self.w if need_x else None,
                g.T @ self.x if need_w else None,
                g.sum(axis=0) if need_b else None)


def linear(x, weight, bias=None):
    return Linear.apply(x, weight, bias)


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        return (g @ self.b.T if self.needs[0] else None, self.a.T @ g if self.needs[1] else None)


def matmul(a, b):
    return MatMul.apply(a, _as_tensor(b, a))


# --------------------------------------------------------------------------- elementwise

class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return (_unbroadcast(g, self.shapes[0]) if self.needs[0] else None,
                _unbroadcast(g, self.shapes[1]) if self.needs[1] else None)


def add(a, b):
    return Add.apply(a, _as_tensor(b, a))


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return (_unbroadcast(g * self.b, self.a.shape) if self.needs[0] else None,
                _unbroadcast(g * self.a, self.b.shape) if self.needs[1] else None)


def mul(a, b):
    return Mul.apply(a, _as_tensor(b, a))


class ReLU(Function):
    def forward(self, x):
        if _native.available(x):
            self.y = _native.relu(x)
            return self.y
        # As torch: NaN stays NaN (maximum propagates it) and passes its gradient ("not <= 0").
        self.y = array_module(x).maximum(x, 0)
        return self.y

    def backward(self, g):
        if _native.available(g, self.y) and g.dtype == self.y.dtype:
            return (_native.relu_backward(g, self.y),)
        return (array_module(g).where(self.y <= 0, g.dtype.type(0), g),)


def relu(x):
    return ReLU.apply(x)


class LeakyReLU(Function):
    def forward(self, x):
        xp = array_module(x)
        self.scale = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.slope))
        return x * self.scale

    def backward(self, g):
        return (g * self.scale,)


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(x, slope=negative_slope)


class Sigmoid(Function):
    def forward(self, x):
        xp = array_module(x)
        # 0.5 (1 + tanh(x / 2)): no overflow for large |x|, unlike 1 / (1 + exp(-x)).
        half = x.dtype.type(0.5)
        self.y = xp.tanh(x * half) * half + half
        return self.y

    def backward(self, g):
        return (g * self.y * (1 - self.y),)


def sigmoid(x):
    return Sigmoid.apply(x)


class Tanh(Function):
    def forward(self, x):
        self.y = array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        return (g * (1 - self.y * self.y),)


def tanh(x):
    return Tanh.apply(x)


class Reshape(Function):
    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, g):
        return (g.reshape(self.in_shape),)


def reshape(x, shape):
    return Reshape.apply(x, shape=tuple(shape))


def flatten(x):
    """(N, ...) -> (N, prod(...))."""
    return reshape(x, (x.shape[0], -1))


class Dropout(Function):
    def forward(self, x):
        xp = array_module(x)
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self.scale = xp.asarray(keep, dtype=x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self.scale

    def backward(self, g):
        return (g * self.scale,)


def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p, rng=rng if rng is not None else np.random.default_rng())


# --------------------------------------------------------------------------- batch norm

class BatchNorm(Function):
    """Batch norm over every axis but 1 ((N, C) or (N, C, H, W)), torch's semantics: in training
    the batch statistics normalise and the running statistics take the unbiased variance."""

    def forward(self, x, gamma, beta):
        xp = array_module(x)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            mean = x.mean(axis=axes)
            centred = x - mean.reshape(shape)
            var = (centred * centred).mean(axis=axes)
            if self.running_mean is not None:
                count = x.size // x.shape[1]
                m = self.momentum
                self.running_mean *= 1 - m
                self.running_mean += m * mean
                self.running_var *= 1 - m
                self.running_var += (m * count / max(count - 1, 1)) * var
        else:
            mean, var = self.running_mean, self.running_var
            centred = x - mean.reshape(shape)
        invstd = (1.0 / xp.sqrt(var + self.eps)).astype(x.dtype)
        self.xhat = centred * invstd.reshape(shape)
        self.gamma, self.invstd, self.axes, self.shape = gamma, invstd, axes, shape
        return self.xhat * gamma.reshape(shape) + beta.reshape(shape)

    def backward(self, g):
        axes, shape = self.axes, self.shape
        grad_beta = g.sum(axis=axes)
        grad_gamma = (g * self.xhat).sum(axis=axes)
        grad_x = None
        if self.needs[0]:
            scale = (self.gamma * self.invstd).reshape(shape)
            if self.training:
                count = g.size // g.shape[1]
                grad_x = scale * (g - (grad_beta.reshape(shape) + self.xhat * grad_gamma.reshape(shape)) / count)
            else:
                grad_x = g * scale
        return grad_x, grad_gamma, grad_beta


def batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5):
    """torch.nn.functional.batch_norm: running_* (arrays, updated in place in training) may be None
    only in training."""
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation needs running_mean and running_var")
    return BatchNorm.apply(x, weight, bias, running_mean=running_mean, running_var=running_var,
                           training=training, momentum=momentum, eps=eps)


# --------------------------------------------------------------------------- losses (means over the batch)

class CrossEntropy(Function):
    """Softmax cross-entropy of logits (N, K) against integer class targets (N,)."""

    def forward(self, logits):
        xp = array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = xp.arange(logits.shape[0])
        self.probs, self.rows = exp / total, rows
        return (xp.log(total[:, 0]) - shifted[rows, self.targets]).mean()

    def backward(self, g):
        grad = self.probs.copy()
        grad[self.rows, self.targets] -= 1
        return (grad * (g / grad.shape[0]),)


def cross_entropy(logits, targets):
    return CrossEntropy.apply(logits, targets=targets.data if isinstance(targets, Tensor) else targets)


class BCEWithLogits(Function):
    """mean(w (max(z, 0) - z t + log(1 + exp(-|z|)))): stable for any logit z; w (a constant
    array broadcast against z, or None for 1) weighs each element, as torch's `weight` does."""

    def forward(self, z, t):
        xp = array_module(z)
        self.z, self.t = z, t
        loss = xp.maximum(z, 0) - z * t + xp.log1p(xp.exp(-xp.abs(z)))
        return (loss if self.weight is None else loss * self.weight).mean()

    def backward(self, g):
        xp = array_module(self.z)
        scale = g / self.z.size if self.weight is None else self.weight * (g / self.z.size)
        prob = xp.tanh(self.z * 0.5) * 0.5 + 0.5
        return ((prob - self.t) * scale if self.needs[0] else None,
                -self.z * scale if self.needs[1] else None)


def bce_with_logits(logits, targets, weight=None):
    return BCEWithLogits.apply(logits, _as_tensor(targets, logits), weight=weight)


class MSE(Function):
    def forward(self, a, b):
        self.diff = a - b
        return (self.diff * self.diff).mean()

    def backward(self, g):
        grad = self.diff * (2 * g / self.diff.size)
        return (grad if self.needs[0] else None, -grad if self.needs[1] else None)


def mse(prediction, target):
    return MSE.apply(prediction, _as_tensor(target, prediction))


__all__ = [
    "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "linear", "matmul", "add", "mul", "relu",
    "leaky_relu", "sigmoid", "tanh", "reshape", "flatten", "dropout", "batch_norm", "cross_entropy",
    "bce_with_logits", "mse", "tensor",
]
