"""Figures derived from timings, the geomeans, and the text table of a bench result.

The bench result document (what `bench --json` writes, what `compare` reads):

    {"schema": "fastconv-bench/1", "created": ISO time,
     "settings": {"shapes_file", "only", "dtype", "threads", "repeat", "min_time_ms", "backends", "peers"},
     "machine": fastconv.machine.describe() + {"probe": bench.probe result,
                                               "load_average": {"start", "end": [1, 5, 15 min] | null}},
     "impls": [names in column order], "unavailable": {name: reason},
     "results": [{"name", "group", "op", "shape": the shape's fields,
                  "flops": {"forward", "backward"} | null, "bytes": {"forward", "backward"} | null,
                  "impls": {name: {"kind": "backend" | "peer", "device": "cpu" | "cuda",
                                   "forward": TIMING, "backward": TIMING,
                                   "vs_peer": {"peer", "forward", "backward"}   (backends with a peer)
                                  } | {"kind", "device", "error": message}}}],
     "geomeans": {name: {"vs_peer": {"peer", "forward", "backward", "all"}, "pct_peak": {"forward", "backward"},
                         "pct_bandwidth": {"forward", "backward"}}}}

    TIMING = {"median_ms", "min_ms", "max_ms", "reps", "samples_ms",
              "gflops", "pct_peak" (convs) | "gbs", "pct_bandwidth" (pools)}

vs_peer is peer median / backend median: above 1, fastconv is faster. pct_peak is against the
probe's FMA peak for the dtype at the run's thread count, pct_bandwidth against its copy bandwidth;
both are null on CUDA, which the probe does not measure.
"""
from __future__ import annotations

from .timing import geomean, summary
from .workloads import DIRECTIONS

SCHEMA = "fastconv-bench/1"
_DIR_SHORT = {"forward": "fwd", "backward": "bwd"}
_OP_SHORT = {"conv2d": "conv", "conv_transpose2d": "tconv", "max_pool2d": "maxpool", "avg_pool2d": "avgpool"}


def timing_entry(samples_s, reps, work, is_conv, peak_gflops, memory_gbs) -> dict:
    """TIMING for one implementation and direction; `work` is flops (convs) or bytes (pools)."""
    entry = summary(samples_s)
    seconds = entry["median_ms"] / 1e3
    entry.update(reps=reps, samples_ms=[s * 1e3 for s in samples_s])
    if is_conv:
        entry["gflops"] = work / seconds / 1e9
        entry["pct_peak"] = 100 * entry["gflops"] / peak_gflops if peak_gflops else None
    else:
        entry["gbs"] = work / seconds / 1e9
        entry["pct_bandwidth"] = 100 * entry["gbs"] / memory_gbs if memory_gbs else None
    return entry


def add_peer_ratios(result: dict) -> None:
    """vs_peer for every backend of one shape whose device has a peer timed on it."""
    impls = result["impls"]
    for name, entry in impls.items():
        if entry["kind"] != "backend" or "error" in entry:
            continue
        peer = next((p for p, e in impls.items()
                     if e["kind"] == "peer" and e["device"] == entry["device"] and "error" not in e), None)
        if peer is not None:
            entry["vs_peer"] = {"peer": peer, **{d: impls[peer][d]["median_ms"] / entry[d]["median_ms"]
                                                for d in DIRECTIONS}}


def geomeans(results: list[dict], impl_names: list[str]) -> dict:
    out = {}
    for name in impl_names:
        entries = [(r, r["impls"][name]) for r in results if name in r["impls"] and "error" not in r["impls"][name]]
        g = {}
        ratios = [e["vs_peer"] for _, e in entries if "vs_peer" in e]
        if ratios:
            g["vs_peer"] = {"peer": ratios[0]["peer"], **{d: geomean(v[d] for v in ratios) for d in DIRECTIONS},
                            "all": geomean([v[d] for v in ratios for d in DIRECTIONS])}
        for metric, convs in (("pct_peak", True), ("pct_bandwidth", False)):
            values = {d: geomean(e[d].get(metric) for r, e in entries if (r["flops"] is not None) == convs)
                      for d in DIRECTIONS}
            if any(v is not None for v in values.values()):
                g[metric] = values
        out[name] = g
    return out


# --------------------------------------------------------------------------- text

def _rate(t: dict) -> str:
    if "gflops" in t:
        pct = f"{t['pct_peak']:3.0f}%" if t.get("pct_peak") is not None else "   -"
        return f"{t['gflops']:6.1f} GF/s {pct}"
    pct = f"{t['pct_bandwidth']:3.0f}%" if t.get("pct_bandwidth") is not None else "   -"
    return f"{t['gbs']:6.1f} GB/s {pct}"


def _ratio(r) -> str:
    return f"{r:.2f}x" if r is not None else "-"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


class Table:
    """The bench table, printable a shape at a time (so rows can appear as they are measured)."""

    _MS, _RATE, _VS = 9, 16, 12

    def __init__(self, shape_names, impl_names, backends_with_peer):
        self.name_width = min(max([len(n) for n in shape_names] + [5]), 44)
        self.impl_names = list(impl_names)
        self.ratio_names = list(backends_with_peer)  # [(backend, peer)]

    def header(self) -> str:
        top = " " * (self.name_width + 13)
        bottom = f"{'shape':<{self.name_width}} {'op':<7} dir "
        for name in self.impl_names:
            top += f"{_fit(name, self._MS + self._RATE):^{self._MS + self._RATE + 1}}"
            bottom += f"{'ms':>{self._MS}} {'rate %peak':>{self._RATE}}"
        for backend, peer in self.ratio_names:
            bottom += f"{_fit(f'{peer}/{backend}', self._VS):>{self._VS + 1}}"
        return top.rstrip() + "\n" + bottom + "\n" + "-" * len(bottom)

    def rows(self, result: dict) -> str:
        lines = []
        for d in DIRECTIONS:
            first = d == "forward"
            line = (f"{_fit(result['name'], self.name_width) if first else '':<{self.name_width}} "
                    f"{_OP_SHORT[result['op']] if first else '':<7} {_DIR_SHORT[d]} ")
            for name in self.impl_names:
                e = result["impls"].get(name)
                if e is None:
                    line += f"{'-':>{self._MS}} {'':>{self._RATE}}"
                elif "error" in e:
                    line += f"{'error' if first else '':>{self._MS}} {'':>{self._RATE}}"
                else:
                    line += f"{e[d]['median_ms']:{self._MS}.3f} {_rate(e[d]):>{self._RATE}}"
            for backend, _ in self.ratio_names:
                e = result["impls"].get(backend, {})
                line += f"{_ratio(e['vs_peer'][d]) if 'vs_peer' in e else '-':>{self._VS + 1}}"
            lines.append(line.rstrip())
        errors = [f"    {name}: {e['error']}" for name, e in result["impls"].items() if "error" in e]
        return "\n".join(lines + errors)

    @staticmethod
    def footer(doc: dict) -> str:
        lines = ["", "geomean over shapes (ratio = peer ms / fastconv ms, >1: fastconv faster; "
                     "% of the probe's FMA peak for convs, of its DRAM copy bandwidth for pools: "
                     "above 100 when the data fits in cache)"]
        for name, g in doc["geomeans"].items():
            parts = []
            if "vs_peer" in g:
                v = g["vs_peer"]
                parts.append(f"{v['peer']}/{name} fwd {_ratio(v['forward'])} bwd {_ratio(v['backward'])} "
                             f"all {_ratio(v['all'])}")
            for metric, label in (("pct_peak", "% FMA peak"), ("pct_bandwidth", "% bandwidth")):
                if metric in g:
                    fwd, bwd = (g[metric][d] for d in DIRECTIONS)
                    parts.append(f"{label} fwd {fwd or 0:.0f} bwd {bwd or 0:.0f}")
            lines.append(f"  {name:<10} " + ";  ".join(parts))
        probe = doc["machine"].get("probe") or {}
        peaks = probe.get("fma_peak_gflops") or {}
        dtype = doc["settings"]["dtype"]
        if probe:
            lines.append(f"  machine: FMA peak {peaks.get(dtype) or '?'} GFLOP/s ({dtype}), copy bandwidth "
                         f"{probe.get('memory_gbs') or '?'} GB/s at {probe.get('threads')} thread(s)"
                         f"{' (cached probe)' if probe.get('cached') else ''}"
                         f"{' (busy machine: estimates)' if probe.get('contended') else ''}")
        return "\n".join(lines)
