"""Layers and Module (torch.nn's names, constructors and defaults) on fastconv.autograd."""
from . import init
from .layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Reshape,
    Sigmoid,
    Tanh,
)
from .module import Module, Sequential

__all__ = [
    "Module", "Sequential", "Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "AvgPool2d", "BatchNorm1d",
    "BatchNorm2d", "Dropout", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Reshape", "init",
]
