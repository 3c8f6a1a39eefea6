"""PNG charts of bench and compare results (matplotlib, imported only here).

Both are horizontal bar charts with one row of bars per shape, top to bottom in the order of
the shapes file, forward bars solid and backward bars hatched, one colour per implementation.
Figures are built with matplotlib.figure.Figure, not pyplot: no global state, no display needed.
"""
from __future__ import annotations

import math

from .workloads import DIRECTIONS

_HATCH = {"forward": None, "backward": "///"}


def unavailable_reason() -> str | None:
    """None when charts can be drawn; checked before a long run, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: pip install 'fastconv[plot]'"
    return None


def _figure(n_rows: int, bars_per_row: int, panels: int):
    from matplotlib.figure import Figure

    height = 1.6 + n_rows * max(0.32, 0.11 * bars_per_row)
    return Figure(figsize=(7.5 * panels, height), layout="constrained")


def _bars(ax, labels, series, log: bool, clip: float | None = None):
    """series: [(legend label, colour, direction, [value or None per label])]. Bars longer than
    `clip` are cut there and labelled with their value."""
    n = len(series)
    height = 0.8 / max(n, 1)
    for j, (legend, colour, direction, values) in enumerate(series):
        ys = [i - 0.4 + height * (j + 0.5) for i in range(len(labels))]
        xs = [v if v is not None else math.nan for v in values]
        if clip is not None:
            for y, x in zip(ys, xs):
                if x > clip:
                    ax.text(clip, y, f"{x:.0f} ", ha="right", va="center", fontsize=6,
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
            xs = [min(x, clip) for x in xs]
        # Ratios grow from 1 (left of it: slower, right: faster); other figures from 0.
        origin = 1.0 if log else 0.0
        ax.barh(ys, [x - origin for x in xs], left=origin, height=height, color=colour,
                hatch=_HATCH[direction], edgecolor="white", linewidth=0.3, label=legend)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first shape on top
    if log:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="best")


def _colours(names):
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def bench_chart(doc: dict, path: str) -> None:
    """Left: peer ms / fastconv ms per backend (log scale, > 1: fastconv faster). Right: % of the
    machine's peak per implementation: FMA peak for convs, copy bandwidth for pools."""
    results = doc["results"]
    labels = [r["name"] for r in results]
    colours = _colours(doc["impls"])
    backends = [n for n in doc["impls"] if any(r["impls"].get(n, {}).get("kind") == "backend" for r in results)]
    ratio_series = []
    for name in backends:
        for d in DIRECTIONS:
            values = [r["impls"].get(name, {}).get("vs_peer", {}).get(d) for r in results]
            if any(v is not None for v in values):
                overall = doc["geomeans"][name]["vs_peer"]
                ratio_series.append((f"{overall['peer']}/{name} {d} (geomean {overall[d]:.2f}x)", colours[name], d,
                                     values))
    peak_series = []
    for name in doc["impls"]:
        for d in DIRECTIONS:
            values = []
            for r in results:
                entry = r["impls"].get(name, {}).get(d) or {}
                values.append(entry.get("pct_peak", entry.get("pct_bandwidth")))
            if any(v is not None for v in values):
                peak_series.append((f"{name} {d}", colours[name], d, values))

    panels = [p for p in (ratio_series, peak_series) if p]
    fig = _figure(len(labels), max(len(p) for p in panels) if panels else 1, max(len(panels), 1))
    axes = fig.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
    s = doc["settings"]
    versions = doc["machine"].get("versions") or {}
    libs = ", ".join(f"{k} {versions[k]}" for k in ("fastconv", "torch") if versions.get(k))
    fig.suptitle(f"fastconv bench: {doc['machine'].get('cpu_model')}, {s['threads']} thread(s), {s['dtype']}; {libs}",
                 fontsize=10)
    k = 0
    if ratio_series:
        ax = axes[k]
        _bars(ax, labels, ratio_series, log=True)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("peer ms / fastconv ms   (> 1: fastconv faster)")
        k += 1
    if peak_series:
        ax = axes[k]
        # Pools whose data fits in cache beat the DRAM bandwidth: cut at 120 % and labelled, so
        # that they do not squash the convolutions' bars.
        _bars(ax, labels, peak_series, log=False, clip=120.0)
        ax.axvline(100.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, 120)
        ax.set_xlabel("% of machine peak (convs: FMA peak; pools: DRAM copy bandwidth)")
    fig.savefig(path, dpi=110)


def compare_chart(comparison: dict, path: str) -> None:
    """Per shape, baseline ms / column ms for every other column (log scale, > 1: that column is
    faster than the baseline). `comparison` is what compare.align returns."""
    labels = [row["name"] + (f"\n(not in {', '.join(row['missing'])})" if row["missing"] else "")
              for row in comparison["rows"]]
    columns = comparison["columns"]
    baseline = comparison["baseline"]
    colours = _colours([c for c in columns if c != baseline])
    series = []
    for column in columns:
        if column == baseline:
            continue
        for d in DIRECTIONS:
            values = [row["ratios"].get(column, {}).get(d) for row in comparison["rows"]]
            series.append((f"{column} {d}", colours[column], d, values))
    fig = _figure(len(labels), len(series), 1)
    ax = fig.subplots()
    if series:
        _bars(ax, labels, series, log=True)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"{baseline} ms / column ms   (> 1: faster than {baseline})")
    fig.suptitle(f"fastconv compare, baseline {baseline}", fontsize=10)
    fig.savefig(path, dpi=110)
