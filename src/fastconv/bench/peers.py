"""PyTorch as a peer: the same forward and backward as workloads.backend_impl, through
torch.nn.functional for the forward and the ATen backward ops that torch.autograd itself calls
for the backward (convolution_backward with every gradient, max_pool2d_with_indices_backward,
avg_pool2d_backward). Calling them directly times the kernels, not the autograd engine's
bookkeeping, as fastconv's *_backward functions are timed; tests/test_bench.py checks that they
give torch.autograd's gradients.
"""
from __future__ import annotations

import numpy as np

from .. import _params as P
from .shapes import Shape
from .workloads import Impl

PEERS = ("torch",)


def unavailable_reason(peer: str, device: str = "cpu") -> str | None:
    """None when `peer` can run on `device` here, else why not."""
    if peer not in PEERS:
        return f"unknown peer {peer!r}; known peers: {', '.join(PEERS)}"
    try:
        import torch
    except ImportError as e:
        return f"torch is not importable ({e})"
    if device == "cuda" and not torch.cuda.is_available():
        return "torch has no CUDA device here"
    return None


def peer_name(peer: str, device: str) -> str:
    return peer if device == "cpu" else f"{peer}-{device}"


def set_threads(n: int) -> None:
    """Give torch the thread count fastconv uses, so that ratios compare like with like."""
    import torch

    torch.set_num_threads(n)


def torch_impl(shape: Shape, inputs: dict[str, np.ndarray], device: str = "cpu") -> Impl:
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    if device == "cuda":
        # fastconv's CUDA kernels multiply in full float32; cuDNN would use TF32 tensor cores by
        # default (PyTorch's allow_tf32), a 10-bit mantissa: compare at the same precision.
        torch.backends.cudnn.allow_tf32 = False
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}
    x, gy, kw, op = t["x"], t["grad_out"], shape.kwargs, shape.op

    def pair(name):
        return list(P.pair(name, kw[name], op))

    if shape.is_conv:
        w, b = t["weight"], t["bias"]
        transposed = op == "conv_transpose2d"
        conv = F.conv_transpose2d if transposed else F.conv2d
        output_padding = pair("output_padding") if transposed else [0, 0]
        backward_args = (gy, x, w, [b.shape[0]], pair("stride"), pair("padding"), pair("dilation"), transposed,
                         output_padding, kw["groups"], [True, True, True])

        def forward():
            return conv(x, w, b, **kw)

        def backward():
            return aten.convolution_backward(*backward_args)
    elif op == "max_pool2d":
        kernel = pair("kernel_size")
        stride = pair("stride") if kw["stride"] is not None else kernel
        _, indices = F.max_pool2d(x, **kw, return_indices=True)

        def forward():
            return F.max_pool2d(x, **kw, return_indices=True)

        def backward():
            return aten.max_pool2d_with_indices_backward(gy, x, kernel, stride, pair("padding"), pair("dilation"),
                                                         kw["ceil_mode"], indices)
    else:
        kernel = pair("kernel_size")
        stride = pair("stride") if kw["stride"] is not None else kernel

        def forward():
            return F.avg_pool2d(x, **kw)

        def backward():
            return aten.avg_pool2d_backward(gy, x, kernel, stride, pair("padding"), kw["ceil_mode"],
                                            kw["count_include_pad"], None)
    return Impl(peer_name("torch", device), "peer", device, forward, backward)
