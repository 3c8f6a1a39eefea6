"""python -m fastconv verify: every available backend against the NumPy reference.

Runs each of the eight public functions on a few small problems per dtype, compares with the
float64 reference and prints a table of the worst error relative to the problem's magnitude
(|error| / sum of |terms|, so 1e-7 is float32 rounding). Exit status 1 if any check fails.
"""
from __future__ import annotations

import numpy as np

import fastconv

# Worst relative error allowed: a few hundred units of roundoff for the sums in these problems.
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-13}


def add_arguments(parser):
    parser.add_argument("--backends", default=None, help="comma-separated backends (default: all available)")


def _problems(rng, dtype):
    """(op name, callable(backend) -> list of arrays)."""
    x = rng.standard_normal((2, 6, 11, 10)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    wt = rng.standard_normal((6, 4, 4, 4)).astype(dtype)
    bt = rng.standard_normal(4).astype(dtype)
    conv_kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    tconv_kw = dict(stride=2, padding=1, output_padding=1)
    pool_kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y = fastconv.conv2d(x, w, b, backend="reference", **conv_kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    yt = fastconv.conv_transpose2d(x, wt, bt, backend="reference", **tconv_kw)
    gyt = rng.standard_normal(yt.shape).astype(dtype)
    mp, idx = fastconv.max_pool2d(x, return_indices=True, backend="reference", **pool_kw)
    gmp = rng.standard_normal(mp.shape).astype(dtype)
    ap = fastconv.avg_pool2d(x, backend="reference", count_include_pad=False, **pool_kw)
    gap = rng.standard_normal(ap.shape).astype(dtype)
    return [
        ("conv2d", lambda be: [fastconv.conv2d(x, w, b, backend=be, **conv_kw)]),
        ("conv2d_backward", lambda be: list(fastconv.conv2d_backward(gy, x, w, b, backend=be, **conv_kw))),
        ("conv_transpose2d", lambda be: [fastconv.conv_transpose2d(x, wt, bt, backend=be, **tconv_kw)]),
        ("conv_transpose2d_backward",
         lambda be: list(fastconv.conv_transpose2d_backward(gyt, x, wt, bt, backend=be, **tconv_kw))),
        ("max_pool2d", lambda be: list(fastconv.max_pool2d(x, return_indices=True, backend=be, **pool_kw))),
        ("max_pool2d_backward", lambda be: [fastconv.max_pool2d_backward(gmp, x, idx, backend=be, **pool_kw)]),
        ("avg_pool2d", lambda be: [fastconv.avg_pool2d(x, backend=be, count_include_pad=False, **pool_kw)]),
        ("avg_pool2d_backward",
         lambda be: [fastconv.avg_pool2d_backward(gap, x, backend=be, count_include_pad=False, **pool_kw)]),
    ]


def _relative_error(got, want):
    got = np.asarray(got.get() if hasattr(got, "get") else got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    return float(np.abs(got - want).max(initial=0.0)) / scale


def run(args) -> int:
    available = [n for n, why in fastconv.backends().items() if why is None and n != "reference"]
    chosen = args.backends.split(",") if args.backends else available
    numpy_backends = [b for b in chosen if b != "cupy"]
    rows, failed = [], False
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        problems = _problems(rng, dtype)
        for op, fn in problems:
            want = fn("reference")
            cells = []
            for be in numpy_backends:
                try:
                    got = fn(be)
                    err = max(_relative_error(g, w) for g, w in zip(got, want))
                    ok = err <= TOLERANCE[dtype]
                    cells.append(f"{err:9.1e} {'ok' if ok else 'FAIL'}")
                except Exception as e:  # reported, not raised: verify shows every result
                    ok = False
                    cells.append(f"error: {type(e).__name__}")
                failed |= not ok
            rows.append((op, np.dtype(dtype).name, cells))
    if "cupy" in chosen:
        print("cupy: run the test suite on a GPU machine (verify compares numpy-array backends)")
    width = max(len(r[0]) for r in rows)
    header = f"{'op':<{width}}  {'dtype':<7}  " + "  ".join(f"{b:>14}" for b in numpy_backends)
    print("max |backend - reference| / max(|reference|, 1)")
    print(header)
    print("-" * len(header))
    for op, dtype, cells in rows:
        print(f"{op:<{width}}  {dtype:<7}  " + "  ".join(f"{c:>14}" for c in cells))
    print(f"\n{'FAILED' if failed else 'all ops pass'} (tolerance: float32 {TOLERANCE[np.float32]:.0e}, "
          f"float64 {TOLERANCE[np.float64]:.0e})")
    return 1 if failed else 0
