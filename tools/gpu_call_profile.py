"""cProfile of 200 small cupy-backend calls (max_pool2d, conv2d): where the host time per call goes."""
import cProfile, pstats, time, numpy as np, cupy as cp, fastconv as fc
x = cp.asarray(np.random.rand(64, 32, 26, 26).astype(np.float32)); w = cp.asarray(np.random.rand(64, 32, 3, 3).astype(np.float32))
for f, name in ((lambda: fc.max_pool2d(x, 2), "maxpool"), (lambda: fc.conv2d(x, w), "conv")):
    for _ in range(20): f()
    cp.cuda.Device().synchronize(); t = time.perf_counter()
    for _ in range(200): f()
    t1 = time.perf_counter(); cp.cuda.Device().synchronize(); t2 = time.perf_counter()
    print(name, "host us/call", (t1 - t) / 200 * 1e6, "with sync", (t2 - t) / 200 * 1e6)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(200): f()
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(18)
