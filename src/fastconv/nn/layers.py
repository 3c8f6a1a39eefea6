"""Layers: torch.nn's constructors, defaults and parameter layouts, on fastconv.autograd."""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor, functional as F
from . import init
from .module import Module


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * kh * kw
        self.weight = Tensor(init.torch_uniform((out_channels, in_channels // groups, kh, kw), fan_in),
                             requires_grad=True)
        self.bias = Tensor(init.torch_uniform((out_channels,), fan_in), requires_grad=True) if bias else None

    def fans(self):
        k, cg, kh, kw = self.weight.shape
        return cg * kh * kw, k // self.groups * kh * kw

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward_fused(self, following, x):
        """Conv2d then MaxPool2d(2) as F.conv2d_max_pool2d (one kernel where the backend has it)."""
        if (type(following) is MaxPool2d and following.pools_2x2()
                and _pair(self.stride) == _pair(self.dilation) == (1, 1) and self.groups == 1):
            return F.conv2d_max_pool2d(x, self.weight, self.bias, self.padding)
        return None


class ConvTranspose2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation
        # torch computes fan_in from weight.size(1), which for a transposed conv is out/groups.
        fan_in = out_channels // groups * kh * kw
        self.weight = Tensor(init.torch_uniform((in_channels, out_channels // groups, kh, kw), fan_in),
                             requires_grad=True)
        self.bias = Tensor(init.torch_uniform((out_channels,), fan_in), requires_grad=True) if bias else None

    def fans(self):
        c, kg, kh, kw = self.weight.shape
        return c // self.groups * kh * kw, kg * kh * kw

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        self.weight = Tensor(init.torch_uniform((out_features, in_features), in_features), requires_grad=True)
        self.bias = Tensor(init.torch_uniform((out_features,), in_features), requires_grad=True) if bias else None

    def fans(self):
        out_features, in_features = self.weight.shape
        return in_features, out_features

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.args = (kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, *self.args)

    def pools_2x2(self):
        """Whether this is the plain 2x2 pool: windows of 2x2 at stride 2, no padding, floor mode."""
        kernel, stride, padding, dilation, ceil_mode = self.args
        return (_pair(kernel) == (2, 2) and (stride is None or _pair(stride) == (2, 2))
                and _pair(padding) == (0, 0) and _pair(dilation) == (1, 1) and not ceil_mode)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        self.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def forward(self, x):
        return F.avg_pool2d(x, *self.args)


class _BatchNorm(Module):
    _buffers = ("running_mean", "running_var")
    ndim = 0

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum = eps, momentum
        self.weight = Tensor(np.ones(num_features, np.float32), requires_grad=True)
        self.bias = Tensor(np.zeros(num_features, np.float32), requires_grad=True)
        self.running_mean = np.zeros(num_features, np.float32)
        self.running_var = np.ones(num_features, np.float32)

    def forward(self, x):
        if x.ndim != self.ndim:
            raise ValueError(f"{type(self).__name__} expects {self.ndim}-D input, got shape {x.shape}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """Over (N, C)."""
    ndim = 2


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W), per channel."""
    ndim = 4


class Dropout(Module):
    def __init__(self, p=0.5):
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training, init.generator())


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Flatten(Module):
    def forward(self, x):
        return F.flatten(x)


class Reshape(Module):
    """(N, ...) -> (N, *shape)."""

    def __init__(self, *shape):
        self.shape = shape

    def forward(self, x):
        return F.reshape(x, (x.shape[0],) + self.shape)
