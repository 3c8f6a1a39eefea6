"""A small reverse-mode autograd over numpy or cupy arrays (micrograd-style).

    from fastconv.autograd import Tensor, no_grad, functional as F
    x = Tensor(images); w = Tensor(weights, requires_grad=True)
    loss = F.cross_entropy(F.linear(F.flatten(F.relu(F.conv2d(x, w))), w2), labels)
    loss.backward()          # w.grad, w2.grad now hold the gradients

engine.py holds Tensor, Function and the reverse walk; functional.py every differentiable op.
"""
from . import functional
from .engine import Function, Tensor, is_grad_enabled, no_grad, tensor

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "tensor", "functional"]
