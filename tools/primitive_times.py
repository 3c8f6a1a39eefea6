"""Developer tool: time the three conv primitives of the cpp backend on the seed conv shapes
(min of repeats), to see which one limits a shape. Not a benchmark: use `python -m fastconv bench`."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fastconv
from fastconv import _params as P
from fastconv.backends import cpp

shapes = json.loads((Path(fastconv.__file__).parent / "bench" / "seed_shapes.json").read_text())["shapes"]
only = sys.argv[1] if len(sys.argv) > 1 else ""


# Process CPU time at one thread: a measure of compute efficiency that other jobs on this
# shared machine disturb much less than wall time does.
fastconv.set_num_threads(1)
torch.set_num_threads(1)


def best(fn, reps=5):
    fn()
    out = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
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
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    fn = torch.nn.functional.conv2d if s["op"] == "conv2d" else torch.nn.functional.conv_transpose2d
    kw = dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"], groups=s["groups"])
    if s["op"] != "conv2d":
        kw["output_padding"] = s.get("output_padding", 0)
    ty = fn(tx, tw, **kw)
    gy = torch.ones_like(ty)
    t_fwd = best(lambda: fn(tx, tw, **kw))
    t_bwd = best(lambda: torch.autograd.grad(fn(tx, tw, **kw), (tx, tw), gy)) - t_fwd
    print(f"{s['name'][:30]:<30} " + "  ".join(f"{n[:6]} {ms:6.2f}ms {gf / ms * 1e3:5.1f}GF" for n, ms in zip(names, t))
          + f" | fwd x{t_fwd / t[0]:.2f} bwd x{t_bwd / (t[1] + t[2]):.2f}")
