"""max_pool2d (with indices) and avg_pool2d, forward and backward, per backend and shape."""
OPS = ("max_pool2d", "avg_pool2d")


def test_pooling(run_case, shape):
    run_case(shape)
