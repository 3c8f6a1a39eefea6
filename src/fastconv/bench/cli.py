"""`python -m fastconv bench`: time forward and backward of every shape on each backend and on
PyTorch, in the same process, and report medians, ratios to torch, GFLOP/s and % of the
machine's FMA peak (convs), GB/s (pools), and geomeans.

    python -m fastconv bench --only mnist --repeat 3
    python -m fastconv bench --backends cpp --peers torch --threads 2 --json out.json --plot out.png

The JSON document is described in bench/report.py; the timing method in bench/timing.py; the
peak and bandwidth probe in bench/probe.py.
"""
from __future__ import annotations

import datetime
import json
import os
import sys

import fastconv
from .. import machine
from . import peers as peer_lib
from . import probe, report, shapes as shape_lib, timing
from .workloads import DIRECTIONS, array_library, backend_impl, make_inputs

DEFAULT_BACKENDS = ("cpp", "numba", "cupy")


class UsageError(Exception):
    """A bad command line: printed as `error: ...`, exit status 2."""


def add_arguments(parser):
    parser.add_argument("--shapes", metavar="FILE",
                        help="shapes file (default: the seed shapes shipped with fastconv)")
    parser.add_argument("--only", metavar="SUBSTRING",
                        help="only shapes whose name, group or op contains SUBSTRING (case-insensitive)")
    parser.add_argument("--backends", metavar="LIST",
                        help=f"comma-separated fastconv backends (default: every available one of "
                             f"{','.join(DEFAULT_BACKENDS)})")
    parser.add_argument("--peers", metavar="LIST",
                        help="comma-separated peer libraries, or 'none' (default: torch when importable)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for fastconv and torch alike (default: fastconv.get_num_threads())")
    parser.add_argument("--repeat", type=int, default=7, metavar="R",
                        help="interleaved rounds; the median is reported (default 7)")
    parser.add_argument("--min-time", type=float, default=20.0, metavar="MS",
                        help="calls are repeated until one measurement lasts at least MS ms (default 20)")
    parser.add_argument("--json", metavar="OUT", help="write every figure and the machine description here")
    parser.add_argument("--plot", metavar="OUT.png", help="write a chart of the ratios and %% of peak here")
    parser.add_argument("--reprobe", action="store_true",
                        help="measure the FMA peak and memory bandwidth again instead of using the cached figures")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]


def _choose_backends(requested: list[str] | None) -> tuple[list[str], dict]:
    available = fastconv.backends()
    if requested is None:
        chosen = [b for b in DEFAULT_BACKENDS if available.get(b) is None]
        return chosen, {b: available[b] for b in DEFAULT_BACKENDS if available.get(b) is not None}
    for b in requested:
        if b not in available:
            raise UsageError(f"unknown backend {b!r}; known backends: {', '.join(available)}")
        if available[b] is not None:
            raise UsageError(f"backend {b!r} is not available: {available[b]}")
    if not requested:
        raise UsageError("--backends names no backend")
    return list(dict.fromkeys(requested)), {}


def _choose_peers(requested: list[str] | None, devices: list[str]) -> tuple[list[tuple[str, str]], dict]:
    """[(peer, device)] for every device a chosen backend runs on, and the ones left out with why."""
    chosen, left_out = [], {}
    for peer in (["torch"] if requested is None else requested):
        for device in devices:
            reason = peer_lib.unavailable_reason(peer, device)
            if reason is None:
                chosen.append((peer, device))
            elif requested is not None and (device == "cpu" or reason.startswith("unknown")):
                raise UsageError(f"peer {peer!r}: {reason}")
            else:
                left_out[peer_lib.peer_name(peer, device)] = reason
    return chosen, left_out


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none): a noisy run shows here."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _device(backend: str) -> str:
    return "cuda" if array_library(backend) == "cupy" else "cpu"


def _measure_shape(shape, backends, peers, settings, machine_probe) -> dict:
    dtype = settings["dtype"]
    inputs = make_inputs(shape, dtype)
    candidates = [(b, "backend", _device(b), lambda b=b: backend_impl(b, shape, inputs)) for b in backends]
    candidates += [(peer_lib.peer_name(p, dev), "peer", dev, lambda dev=dev: peer_lib.torch_impl(shape, inputs, dev))
                   for p, dev in peers]
    impls, errors = [], {}
    for name, kind, device, build in candidates:
        try:
            impl = build()
            for d in DIRECTIONS:  # one call each: an implementation that cannot run this shape says so here
                impl.call(d)()
            impls.append(impl)
        except Exception as e:  # recorded in the result and shown in the table, not fatal to the run
            errors[name] = {"kind": kind, "device": device, "error": f"{type(e).__name__}: {e}"}
    measured = timing.rounds({(i.name, d): (i.call(d), i.device) for i in impls for d in DIRECTIONS},
                             settings["repeat"], settings["min_time_ms"] / 1e3)
    flops, nbytes = shape.flops(), shape.bytes_moved(dtype)
    work = flops or nbytes
    peak = (machine_probe.get("fma_peak_gflops") or {}).get(dtype)
    result = {"name": shape.name, "group": shape.group, "op": shape.op, "shape": shape.spec,
              "flops": flops, "bytes": nbytes, "impls": {}}
    for impl in impls:
        on_cpu = impl.device == "cpu"
        entry = {"kind": impl.kind, "device": impl.device}
        for d in DIRECTIONS:
            m = measured[(impl.name, d)]
            entry[d] = report.timing_entry(m["samples_s"], m["reps"], work[d], shape.is_conv,
                                           peak if on_cpu else None,
                                           machine_probe.get("memory_gbs") if on_cpu else None)
        result["impls"][impl.name] = entry
    result["impls"].update(errors)
    report.add_peer_ratios(result)
    return result


def run(args) -> int:
    try:
        return _run(args)
    except (UsageError, shape_lib.ShapesError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {args.threads}")
    if args.repeat < 1:
        raise UsageError(f"--repeat must be a positive integer, got {args.repeat}")
    if not args.min_time > 0:
        raise UsageError(f"--min-time must be positive, got {args.min_time}")
    if args.plot:
        from . import plot

        if plot.unavailable_reason():
            raise UsageError(plot.unavailable_reason())
    all_shapes = shape_lib.load(args.shapes)
    selected = shape_lib.select(all_shapes, args.only)
    if not selected:
        raise UsageError(f"--only {args.only!r} matches no shape in {args.shapes or shape_lib.default_path()}")
    backends, unavailable = _choose_backends(_names(args.backends))
    if not backends:
        raise UsageError("no fastconv backend is available: " + "; ".join(f"{b}: {r}" for b, r in unavailable.items()))
    devices = sorted({_device(b) for b in backends}, key=["cpu", "cuda"].index)
    peers, peers_left_out = _choose_peers(_names(args.peers), devices)
    unavailable.update(peers_left_out)

    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    threads = fastconv.get_num_threads()
    if any(p == "torch" for p, _ in peers):
        peer_lib.set_threads(threads)
    settings = {"shapes_file": str(args.shapes or shape_lib.default_path()), "only": args.only,
                "dtype": args.dtype, "threads": threads, "repeat": args.repeat, "min_time_ms": args.min_time,
                "backends": backends, "peers": list(dict.fromkeys(p for p, _ in peers)),
                "heap": timing.steady_heap()}
    for name, reason in unavailable.items():
        print(f"note: {name} left out: {reason}", file=sys.stderr)

    if "cpu" in devices:
        print(f"probing FMA peak and memory bandwidth at {threads} thread(s) (cached per machine)...",
              file=sys.stderr, end=" ", flush=True)
        machine_probe = probe.get(threads, refresh=args.reprobe)
        print("cached" if machine_probe["cached"] else "measured", file=sys.stderr)
        if machine_probe.get("contended"):
            print("warning: the machine is busy (no uncontended probe run): the peak and bandwidth are "
                  "estimates and were not cached", file=sys.stderr)
    else:
        machine_probe = {}
    impl_names = backends + [peer_lib.peer_name(p, dev) for p, dev in peers]
    ratio_columns = [(b, peer_lib.peer_name(p, dev)) for b in backends for p, dev in peers
                     if dev == _device(b)]

    from tqdm import tqdm

    load_before = _load_average()
    if load_before and load_before[0] >= 0.5 * machine.cores():
        print(f"note: load average {load_before[0]:.1f} on {machine.cores()} core(s): other work is running, "
              f"timings will be noisy", file=sys.stderr)

    table = report.Table([s.name for s in selected], impl_names, ratio_columns)
    print(f"fastconv bench: {len(selected)} shape(s), {args.dtype}, {threads} thread(s), "
          f"median of {args.repeat} rounds, >= {args.min_time:g} ms per measurement")
    print(table.header())
    results = []
    # The bar goes to stderr and only to a terminal; rows are written above it as they finish.
    with tqdm(selected, unit="shape", file=sys.stderr, disable=None, leave=False) as bar:
        for shape in bar:
            bar.set_description(shape.name[:30])
            result = _measure_shape(shape, backends, peers, settings, machine_probe)
            results.append(result)
            tqdm.write(table.rows(result), file=sys.stdout)

    doc = {
        "schema": report.SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": {**machine.describe(), "probe": machine_probe,
                    "load_average": {"start": load_before, "end": _load_average()}},
        "impls": impl_names,
        "unavailable": unavailable,
        "results": results,
        "geomeans": report.geomeans(results, impl_names),
    }
    print(report.Table.footer(doc))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        from . import plot

        plot.bench_chart(doc, args.plot)
        print(f"wrote {args.plot}")
    return 0
