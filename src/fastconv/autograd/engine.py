"""Tensor, Function and the reverse walk (micrograd's engine, with array-valued nodes).

A Tensor holds an array (numpy or cupy) and, when it was computed from tensors that need
gradients, the Function node that made it. `Function.apply` runs the forward on the raw
arrays and records the node; `Tensor.backward` sorts the graph topologically and calls each
node's `backward(grad_out)`, which returns one gradient per input (None where none is
needed), accumulated into the inputs' `.grad`.

Backward functions never modify the gradient they receive: one array may be handed to
several inputs (add, reshape), so in-place updates would leak between them.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .._params import array_module

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within the block no graph is recorded (evaluation, sampling)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_node")

    def __init__(self, data, requires_grad=False, _node=None):
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._node = _node

    # -- array-like properties
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def numpy(self):
        """The data as a numpy array (copied from the GPU for cupy)."""
        return self.data if isinstance(self.data, np.ndarray) else self.data.get()

    def item(self):
        return float(self.data)

    def detach(self):
        return Tensor(self.data)

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"

    # -- operators (the Functions live in functional.py; imported late to avoid a cycle)
    def __add__(self, other):
        from .functional import add
        return add(self, other)

    __radd__ = __add__

    def __mul__(self, other):
        from .functional import mul
        return mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other if isinstance(other, Tensor) else -np.asarray(other))

    def __matmul__(self, other):
        from .functional import matmul
        return matmul(self, other)

    def reshape(self, *shape):
        from .functional import reshape
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)

    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires it."""
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward() without a gradient needs a scalar, got shape {self.shape}")
            grad = array_module(self.data).ones_like(self.data)
        order, seen = [], set()

        def visit(t):  # iterative DFS: deep graphs must not hit the recursion limit
            stack = [(t, False)]
            while stack:
                node_t, done = stack.pop()
                if done:
                    order.append(node_t)
                    continue
                if id(node_t) in seen:
                    continue
                seen.add(id(node_t))
                stack.append((node_t, True))
                if node_t._node is not None:
                    for p in node_t._node.inputs:
                        if p is not None and p.requires_grad and id(p) not in seen:
                            stack.append((p, False))

        visit(self)
        grads = {id(self): grad}
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            node = t._node
            if node is None:  # a leaf: keep its gradient
                t.grad = g if t.grad is None else t.grad + g
                continue
            for p, gp in zip(node.inputs, node.backward(g)):
                if gp is None or p is None or not p.requires_grad:
                    continue
                k = id(p)
                grads[k] = gp if k not in grads else grads[k] + gp
            t._node = None  # free the saved arrays as we go


def tensor(data, requires_grad=False, dtype=None):
    """A leaf Tensor from an array or array-like; Python numbers and lists become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        data = array_module(data).asarray(data, dtype=dtype) if _is_array(data) else np.asarray(data, dtype)
    elif not _is_array(data):
        data = np.asarray(data, dtype=np.float32)
    return Tensor(data, requires_grad=requires_grad)


def _is_array(a):
    return isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy")


class Function:
    """A node: `forward(*arrays)` computes the output array, saving what `backward` needs on
    self; `backward(grad_out)` returns one gradient per input, None where `self.needs` says
    that input needs none. Non-tensor arguments go to the constructor."""

    inputs: tuple = ()
    needs: tuple = ()

    def __init__(self, **options):
        self.__dict__.update(options)

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        fn = cls(**options)
        # Set before forward so that it can skip saving what no gradient will need.
        fn.needs = tuple(_grad_enabled and t is not None and t.requires_grad for t in inputs)
        out = fn.forward(*[None if t is None else t.data for t in inputs])
        if isinstance(out, np.generic):  # numpy reductions return scalars, not 0-d arrays
            out = np.asarray(out)
        if any(fn.needs):
            fn.inputs = inputs
            return Tensor(out, requires_grad=True, _node=fn)
        return Tensor(out)
