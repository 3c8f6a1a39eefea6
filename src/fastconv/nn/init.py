"""Weight initialisation and the generator it draws from (like torch.manual_seed).

torch's layer defaults: kaiming_uniform(a=sqrt(5)) for weights and U(+-1/sqrt(fan_in)) for
biases, which both come to U(+-1/sqrt(fan_in)) (torch/nn/modules/conv.py, linear.py).
Keras' defaults: glorot_uniform weights U(+-sqrt(6 / (fan_in + fan_out))) and zero biases.
"""
from __future__ import annotations

import math

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reseed the generator that layer constructors draw from."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def uniform(shape, bound, dtype=np.float32):
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def torch_uniform(shape, fan_in, dtype=np.float32):
    """torch's default for both weights and biases of Conv/ConvTranspose/Linear."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def glorot_uniform(shape, fan_in, fan_out, dtype=np.float32):
    return uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def keras_defaults(module) -> None:
    """Re-initialise every Conv2d/ConvTranspose2d/Linear in `module` the Keras way (glorot-uniform
    weights, zero biases)."""
    from .layers import Conv2d, ConvTranspose2d, Linear

    for layer in module.modules():
        if isinstance(layer, (Conv2d, ConvTranspose2d, Linear)):
            fan_in, fan_out = layer.fans()
            layer.weight.data[...] = glorot_uniform(layer.weight.shape, fan_in, fan_out, layer.weight.dtype)
            if layer.bias is not None:
                layer.bias.data[...] = 0
