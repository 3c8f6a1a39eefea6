"""conv_transpose2d forward and backward (grad_x, grad_weight, grad_bias) per backend and shape."""
OPS = ("conv_transpose2d",)


def test_conv_transpose2d(run_case, shape):
    run_case(shape)
