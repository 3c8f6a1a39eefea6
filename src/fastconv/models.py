"""The five seed networks (DESIGN §Networks).

ReLU and 2x2 max-pooling commute (ReLU is monotone, so max(relu(a), relu(b)) = relu(max(a, b)),
and the gradients agree too: both route through the same argmax and are zero where it is not
positive), so "Conv ReLU MaxPool" is built as Conv, MaxPool, ReLU: the ReLU then touches a
quarter of the elements. The PyTorch twin used for timing (`torch_mnist_cnn`) does the same.
"""
from __future__ import annotations

from . import nn

NAMES = ("mnist", "denoise", "deconv", "inpaint", "dcgan")
LATENT = 100  # the DCGAN generator's input size


def mnist_cnn():
    """The Keras MNIST classifier: Keras initialisers (glorot-uniform, zero bias); logits out."""
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.MaxPool2d(2), nn.ReLU(),       # 28 -> 26 -> 13
        nn.Conv2d(32, 64, 3), nn.MaxPool2d(2), nn.ReLU(),      # 13 -> 11 -> 5
        nn.Conv2d(64, 64, 3), nn.ReLU(),                       # 5 -> 3
        nn.Flatten(), nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    nn.init.keras_defaults(model)
    return model


def restoration_net(depth=2, in_channels=1, width=32):
    """For 32x32 images: `depth` blocks of 3x3 'same' conv, ReLU, 2x2 max-pool (32 -> 32 / 2**depth),
    then one transposed conv (4x4, stride 2, padding 1: DCGAN's upsampler, whose windows overlap,
    so every output pixel mixes four input pixels) + ReLU per block back to 32x32, and a 3x3 conv to one
    channel of logits: sigmoid(logits) is the image. They are trained with binary cross-entropy
    on the logits (as Keras' denoising autoencoder is): MSE through a sigmoid stalls once the
    sigmoid saturates, and on MNIST, mostly black, it saturates at black within a few hundred
    steps."""
    if not 1 <= depth <= 5:
        raise ValueError(f"restoration_net: depth must be 1..5 at 32x32, got {depth}")
    channels = [width * 2 ** min(i, 2) for i in range(depth)]  # 32, 64, 128, 128, 128
    layers, previous = [], in_channels
    for c in channels:
        layers += [nn.Conv2d(previous, c, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
        previous = c
    for c in reversed([width] + channels[:-1]):
        layers += [nn.ConvTranspose2d(previous, c, 4, stride=2, padding=1), nn.ReLU()]
        previous = c
    layers.append(nn.Conv2d(previous, 1, 3, padding=1))
    return nn.Sequential(*layers)


def denoise_net():
    return restoration_net(depth=2)


def inpaint_net():
    """Input: the masked image and the mask (2 channels); three blocks reach 4x4, so every pixel
    of a hole sees its surroundings. Twice the denoiser's width: filling a hole is the harder
    problem (width 64 gave +0.6 dB masked PSNR over 32 at equal steps)."""
    return restoration_net(depth=3, in_channels=2, width=64)


def deconv_net():
    """28x28 -> 28x28 through a pooled 14x14 and a transposed conv back up."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),   # 28 -> 14
        nn.ConvTranspose2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # 14 -> 28
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 1, 3, padding=1), nn.Sigmoid(),
    )


def generator():
    """z (N, 100) -> images (N, 1, 28, 28) in [-1, 1]."""
    return nn.Sequential(
        nn.Linear(LATENT, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(), nn.Reshape(128, 7, 7),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),   # 7 -> 14
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),                         # 14 -> 28
    )


def discriminator():
    """images (N, 1, 28, 28) -> one logit each (N, 1)."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),                          # 28 -> 14
        nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),   # 14 -> 7
        nn.Flatten(), nn.Linear(128 * 7 * 7, 1),
    )


class DCGAN(nn.Module):
    """Holds both networks so that one checkpoint saves them."""

    def __init__(self):
        self.generator = generator()
        self.discriminator = discriminator()


def torch_mnist_cnn(relu_first=False):
    """The same classifier in PyTorch (Keras initialisers) for timing against: in our layer
    order, or with relu_first in DESIGN's (Conv ReLU MaxPool)."""
    import torch

    def block(c_in, c_out):
        conv, pool, relu = torch.nn.Conv2d(c_in, c_out, 3), torch.nn.MaxPool2d(2), torch.nn.ReLU()
        return [conv, relu, pool] if relu_first else [conv, pool, relu]

    model = torch.nn.Sequential(
        *block(1, 32), *block(32, 64),
        torch.nn.Conv2d(64, 64, 3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(576, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    )
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model
