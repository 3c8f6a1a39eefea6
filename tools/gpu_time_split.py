"""CPU vs GPU time per call of a few cupy-backend ops (cupyx.profiler.benchmark): host overhead or kernel."""
import numpy as np, cupy as cp, fastconv as fc
from cupyx.profiler import benchmark
rng = np.random.default_rng(0)
def arr(*s): return cp.asarray(rng.standard_normal(s).astype(np.float32))
cases = {
    "G1 tconv 512->256 4->8 fwd": (lambda x, w: fc.conv_transpose2d(x, w, stride=2, padding=1), arr(64, 512, 4, 4), arr(512, 256, 4, 4)),
    "G4 tconv 64->3 32->64 fwd": (lambda x, w: fc.conv_transpose2d(x, w, stride=2, padding=1), arr(64, 64, 32, 32), arr(64, 3, 4, 4)),
    "D3 conv 128->256 16->8 fwd": (lambda x, w: fc.conv2d(x, w, stride=2, padding=1), arr(64, 128, 16, 16), arr(256, 128, 4, 4)),
    "vgg.conv3 fwd": (lambda x, w: fc.conv2d(x, w, padding=1), arr(8, 256, 56, 56), arr(256, 256, 3, 3)),
    "pool1 fwd": (lambda x, w: fc.max_pool2d(x, 2), arr(64, 32, 26, 26), None),
}
for name, (f, x, w) in cases.items():
    r = benchmark(f, (x, w), n_repeat=50, n_warmup=5)
    print(f"{name:32s} cpu {np.median(r.cpu_times)*1e3:.3f} ms  gpu {np.median(r.gpu_times[0])*1e3:.3f} ms")
