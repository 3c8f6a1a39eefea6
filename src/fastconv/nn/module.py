"""Module: parameters (Tensor attributes), buffers (named array attributes), children, and
their state dict saved as .npz. Sequential chains modules."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import Tensor


class Module:
    training = True
    _buffers: tuple = ()  # names of array attributes that are state but not parameters

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, *args):
        raise NotImplementedError

    def forward_fused(self, following, x):
        """self then `following` on x, in one fused step, or None where this module has none
        for that pair (Sequential asks before running them one by one)."""
        return None

    # -- the tree
    def named_children(self):
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield name, v

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        for name, v in vars(self).items():
            if isinstance(v, Tensor):
                yield prefix + name, v
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def state_dict(self, prefix="") -> OrderedDict:
        """name -> array: every parameter and buffer (the live arrays, not copies)."""
        state = OrderedDict()
        for name, v in vars(self).items():
            if isinstance(v, Tensor):
                state[prefix + name] = v.data
            elif name in self._buffers:
                state[prefix + name] = v
        for name, child in self.named_children():
            state.update(child.state_dict(f"{prefix}{name}."))
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into this module's parameters and buffers (shapes must match)."""
        own = self.state_dict()
        if strict:
            missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
            if missing or unexpected:
                raise KeyError(f"state dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, target in own.items():
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name}: expected shape {tuple(target.shape)}, got {tuple(value.shape)}")
            target[...] = _array_like(value, target)

    def save(self, path):
        """Write the state dict to an .npz file (numpy arrays, wherever the model lives)."""
        np.savez(path, **{k: _to_numpy(v) for k, v in self.state_dict().items()})

    def load(self, path):
        with np.load(path) as f:
            self.load_state_dict({k: f[k] for k in f.files})
        return self

    # -- modes and placement
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, xp):
        """Move parameters and buffers to the array library `xp` (numpy or cupy)."""
        for m in self.modules():
            for name, v in vars(m).items():
                if isinstance(v, Tensor):
                    v.data = xp.asarray(_to_numpy(v.data)) if xp is np else xp.asarray(v.data)
                    v.grad = None
                elif name in m._buffers:
                    setattr(m, name, xp.asarray(_to_numpy(v)) if xp is np else xp.asarray(v))
        return self


def _to_numpy(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _array_like(value, target):
    if isinstance(target, np.ndarray):
        return _to_numpy(value)
    import cupy

    return cupy.asarray(value)


class Sequential(Module):
    def __init__(self, *layers):
        self.layers = list(layers)

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def forward(self, x):
        layers, i = self.layers, 0
        while i < len(layers):
            y = layers[i].forward_fused(layers[i + 1], x) if i + 1 < len(layers) else None
            if y is None:
                x, i = layers[i](x), i + 1
            else:
                x, i = y, i + 2
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)
