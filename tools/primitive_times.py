"""Developer tool: time the three conv primitives of the cpp backend on the seed conv shapes
(min of repeats), to see which one limits a shape. Not a benchmark: use `python -m fastconv bench`."""
import json
import sys
import time
from pathlib import Path

import numpy as np

import fastconv
from fastconv import _params as P
from fastconv.backends import cpp

shapes = json.loads((Path(fastconv.__file__).parent / "bench" / "seed_shapes.json").read_text())["shapes"]
only = sys.argv[1] if len(sys.argv) > 1 else ""


def best(fn, reps=5):
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out) * 1e3


for s in shapes:
    if s["op"] not in ("conv2d", "conv_transpose2d") or only not in s["name"]:
        continue
    rng = np.random.default_rng(0)
    x = rng.standard_normal((s["N"], s["C"], s["H"], s["W"]), dtype=np.float32)
    if s["op"] == "conv2d":
        w = rng.standard_normal((s["K"], s["C"] // s["groups"], s["R"], s["S"]), dtype=np.float32)
        _, x4, w, _, _, g, _ = P.conv_params(x, w, None, s["stride"], s["padding"], s["dilation"], s["groups"])
        y = cpp.conv_forward(x4, w, None, g)
        t = (best(lambda: cpp.conv_forward(x4, w, None, g)), best(lambda: cpp.conv_backward_data(y, w, None, g)),
             best(lambda: cpp.conv_backward_weight(y, x4, g)))
        names = ("fwd", "bwd_data", "bwd_weight")
    else:
        w = rng.standard_normal((s["C"], s["K"] // s["groups"], s["R"], s["S"]), dtype=np.float32)
        _, x4, w, _, _, g, _ = P.conv_transpose_params(x, w, None, s["stride"], s["padding"],
                                                       s.get("output_padding", 0), s["groups"], s["dilation"])
        y = cpp.conv_backward_data(x4, w, None, g)
        t = (best(lambda: cpp.conv_backward_data(x4, w, None, g)), best(lambda: cpp.conv_forward(y, w, None, g)),
             best(lambda: cpp.conv_backward_weight(x4, y, g)))
        names = ("fwd(=bwd_data)", "gx(=fwd)", "gw")
    gf = g.flops / 1e9
    print(f"{s['name']:<42} " + "  ".join(f"{n} {ms:7.2f} ms {gf / ms * 1e3:5.1f} GF/s" for n, ms in zip(names, t)))
