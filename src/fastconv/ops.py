"""The public ops: validate (_params), choose (dispatch), compute (a backend).

A backend module implements seven primitives on 4-D C-contiguous arrays and a geometry:

    conv_forward(x, w, bias, g)            -> y            y = conv(x, w) + bias
    conv_backward_data(gy, w, bias, g)     -> gx           gx = conv^T(gy, w) (+ bias per channel of x)
    conv_backward_weight(gy, x, g)         -> gw
    max_pool_forward(x, g)                 -> (y, indices int64)
    max_pool_backward(gy, indices, g)      -> gx
    avg_pool_forward(x, g)                 -> y
    avg_pool_backward(gy, g)               -> gx

and may implement `bias_grad(gy) -> gb` (gy summed over images and pixels, in double and
rounded once); without it the ops compute that with the array library.

A transposed convolution is the backward-data of the convolution described by its geometry
(see _params.conv_transpose_params), so its forward and backward reuse the same three conv
primitives: one fast backward-data kernel serves both ops.
"""
from __future__ import annotations

from . import _params as P
from .dispatch import select


def _unbatch(a, batched):
    return a if (a is None or batched) else a[0]


def _bias_grad(impl, gy, xp):
    # Summed in float64 and rounded once: matches the reference to the last bit for float64
    # and is the accurate choice for float32.
    if hasattr(impl, "bias_grad"):
        return impl.bias_grad(gy)
    return gy.sum(axis=(0, 2, 3), dtype=xp.float64).astype(gy.dtype)


def bias_grad(grad_out, *, backend=None):
    """The gradient of a conv's bias: grad_out (N, K, H, W) summed over images and pixels."""
    xp = P.array_module(grad_out)
    return _bias_grad(select(backend, xp), grad_out, xp)


# --------------------------------------------------------------------------- conv2d

def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """2-D convolution with torch.nn.functional.conv2d's semantics (NCHW or unbatched CHW)."""
    xp, x, weight, bias, _, g, batched = P.conv_params(x, weight, bias, stride, padding, dilation, groups)
    y = select(backend, xp).conv_forward(x, weight, bias, g)
    return _unbatch(y, batched)


def conv2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                    needs=(True, True, True), backend=None):
    """Gradients of conv2d: (grad_x, grad_weight, grad_bias), None where not needed (or no bias)."""
    op = "conv2d_backward"
    need_x, need_w, need_b = P.conv_needs(needs, op)
    xp, x, weight, bias, gy, g, batched = P.conv_params(
        x, weight, bias, stride, padding, dilation, groups, grad_out=grad_out, op=op)
    impl = select(backend, xp)
    gx = impl.conv_backward_data(gy, weight, None, g) if need_x else None
    gw = impl.conv_backward_weight(gy, x, g) if need_w else None
    gb = _bias_grad(impl, gy, xp) if (need_b and bias is not None) else None
    return _unbatch(gx, batched), gw, gb


# --------------------------------------------------------------------------- conv_transpose2d

def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None):
    """2-D transposed convolution with torch.nn.functional.conv_transpose2d's semantics."""
    xp, x, weight, bias, _, g, batched = P.conv_transpose_params(
        x, weight, bias, stride, padding, output_padding, groups, dilation)
    y = select(backend, xp).conv_backward_data(x, weight, bias, g)
    return _unbatch(y, batched)


def conv_transpose2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, needs=(True, True, True), backend=None):
    """Gradients of conv_transpose2d: (grad_x, grad_weight, grad_bias)."""
    op = "conv_transpose2d_backward"
    need_x, need_w, need_b = P.conv_needs(needs, op)
    xp, x, weight, bias, gy, g, batched = P.conv_transpose_params(
        x, weight, bias, stride, padding, output_padding, groups, dilation, grad_out=grad_out, op=op)
    impl = select(backend, xp)
    # The transposed conv is conv^T, so its grad_x is the conv's forward of grad_out and its
    # grad_weight the conv's backward-weight with grad_out in the role of the conv's input.
    gx = impl.conv_forward(gy, weight, None, g) if need_x else None
    gw = impl.conv_backward_weight(x, gy, g) if need_w else None
    gb = _bias_grad(impl, gy, xp) if (need_b and bias is not None) else None
    return _unbatch(gx, batched), gw, gb


# --------------------------------------------------------------------------- pooling

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               backend=None):
    """2-D max pooling; with return_indices, also the flat h * W + w position of each maximum."""
    xp, x, _, g, batched = P.pool_params("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    y, indices = select(backend, xp).max_pool_forward(x, g)
    if return_indices:
        return _unbatch(y, batched), _unbatch(indices, batched)
    return _unbatch(y, batched)


def max_pool2d_backward(grad_out, x, indices, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, backend=None):
    """Gradient of max_pool2d with respect to x, routed through `indices`."""
    op = "max_pool2d_backward"
    xp, x, gy, g, batched = P.pool_params(op, x, kernel_size, stride, padding, dilation, ceil_mode, grad_out=grad_out)
    indices = P.max_pool_indices(op, indices, g, batched, xp)
    gx = select(backend, xp).max_pool_backward(gy, indices, g)
    return _unbatch(gx, batched)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """2-D average pooling with torch.nn.functional.avg_pool2d's semantics."""
    xp, x, _, g, batched = P.pool_params("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode,
                                         count_include_pad=count_include_pad, divisor_override=divisor_override)
    y = select(backend, xp).avg_pool_forward(x, g)
    return _unbatch(y, batched)


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of avg_pool2d with respect to x."""
    xp, x, gy, g, batched = P.pool_params("avg_pool2d_backward", x, kernel_size, stride, padding, 1, ceil_mode,
                                          grad_out=grad_out, count_include_pad=count_include_pad,
                                          divisor_override=divisor_override)
    gx = select(backend, xp).avg_pool_backward(gy, g)
    return _unbatch(gx, batched)
