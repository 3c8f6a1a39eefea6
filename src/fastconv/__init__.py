"""fastconv: 2-D convolution, transposed convolution and pooling, forward and backward.

Signatures and semantics follow torch.nn.functional; see DESIGN.md for the op contract.
"""
# The subpackage fastconv.backends is imported first so that the function `backends` below
# (bound afterwards) is what `fastconv.backends` names; importing the subpackage later would
# rebind the attribute to the module.
from . import backends as _backend_modules  # noqa: F401
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
