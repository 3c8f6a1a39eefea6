"""fastconv: 2-D convolution, transposed convolution and pooling, forward and backward.

Signatures and semantics follow torch.nn.functional; see DESIGN.md for the op contract.
"""
from ._threads import get_num_threads, set_num_threads
from .dispatch import backends, use_backend
from .ops import (
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__version__ = "0.1.0"

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "backends", "use_backend", "set_num_threads", "get_num_threads",
]
