"""`python -m fastconv compare A.json B.json [C.json ...]`: bench results side by side.

Every implementation of every file is a column, named LABEL:IMPL (LABEL is the file's name
without .json unless --labels says otherwise). Per shape and direction the table shows each
column's median ms and its ratio to the baseline column (the first, or --baseline):
baseline ms / column ms, so above 1 the column is faster. Geomeans are over the shapes both
columns have. Shapes are matched by name; a shape missing from some files keeps its row and is
listed at the end with the files it is missing from, and a shape whose definition differs
between files is marked.

    python -m fastconv compare before.json after.json
    python -m fastconv compare laptop.json server.json --impls cpp --plot machines.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import report
from .timing import geomean
from .workloads import DIRECTIONS


class CompareError(Exception):
    """A file or option that compare cannot use; the message names it."""


def add_arguments(parser):
    parser.add_argument("files", nargs="+", metavar="FILE.json", help="two or more `bench --json` results")
    parser.add_argument("--impls", metavar="LIST",
                        help="only these implementations of each file, e.g. cpp or cpp,torch (default: all)")
    parser.add_argument("--labels", metavar="LIST", help="comma-separated names for the files (default: file names)")
    parser.add_argument("--baseline", metavar="LABEL:IMPL", help="the column ratios are taken against (default: the first)")
    parser.add_argument("--plot", metavar="OUT.png", help="write a chart of the ratios here")


def load(path) -> dict:
    """A bench result document, checked enough that compare can rely on it."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise CompareError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CompareError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(doc, dict) or doc.get("schema") != report.SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise CompareError(f"{path}: not a `python -m fastconv bench --json` result "
                           f"(schema {found!r}, expected {report.SCHEMA!r})")
    for key, kind in (("results", list), ("impls", list), ("settings", dict), ("machine", dict)):
        if not isinstance(doc.get(key), kind):
            raise CompareError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    for i, r in enumerate(doc["results"]):
        if not (isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("impls"), dict)):
            raise CompareError(f"{path}: results[{i}] has no name or no impls")
    return doc


def _labels(paths, given: str | None) -> list[str]:
    if given is not None:
        labels = [s.strip() for s in given.split(",")]
        if len(labels) != len(paths) or not all(labels):
            raise CompareError(f"--labels names {len(labels)} file(s), but {len(paths)} were given")
    else:
        labels = [Path(p).stem for p in paths]
        if len(set(labels)) < len(labels):  # same file name in different folders
            labels = [str(p) for p in paths]
    if len(set(labels)) < len(labels):
        raise CompareError(f"labels must differ, got {', '.join(labels)}")
    return labels


def align(docs: list[dict], labels: list[str], impls: list[str] | None = None, baseline: str | None = None) -> dict:
    """The comparison: columns, one row per shape name (in first-seen order), geomeans and the
    shapes some files lack."""
    sources = {f"{label}:{name}": (i, name) for i, (label, doc) in enumerate(zip(labels, docs))
               for name in doc["impls"] if impls is None or name in impls}  # column -> (file index, impl)
    columns = list(sources)
    if not columns:
        raise CompareError(f"no implementation {', '.join(impls or [])} in any file")
    baseline = baseline or columns[0]
    if baseline not in columns:
        raise CompareError(f"--baseline {baseline!r} is not a column; columns: {', '.join(columns)}")

    by_name = [{r["name"]: r for r in doc["results"]} for doc in docs]
    names = list(dict.fromkeys(name for index in by_name for name in index))
    rows = []
    for name in names:
        present = [label for label, index in zip(labels, by_name) if name in index]
        found = [index[name] for index in by_name if name in index]
        row = {"name": name, "op": found[0].get("op"), "present": present,
               "missing": [label for label in labels if label not in present],
               "differs": any(r.get("shape") != found[0].get("shape") for r in found), "ms": {}, "ratios": {}}
        for column in columns:
            file_index, impl = sources[column]
            entry = by_name[file_index].get(name, {}).get("impls", {}).get(impl)
            if entry and all(isinstance(entry.get(d), dict) for d in DIRECTIONS):
                row["ms"][column] = {d: entry[d]["median_ms"] for d in DIRECTIONS}
        base = row["ms"].get(baseline)
        for column, ms in row["ms"].items():
            if base is not None and column != baseline:
                row["ratios"][column] = {d: base[d] / ms[d] for d in DIRECTIONS}
        rows.append(row)

    geomeans = {}
    for column in columns:
        ratios = [row["ratios"][column] for row in rows if column in row["ratios"]]
        if ratios:
            geomeans[column] = {**{d: geomean(r[d] for r in ratios) for d in DIRECTIONS},
                                "all": geomean([r[d] for r in ratios for d in DIRECTIONS]), "shapes": len(ratios)}
    return {"labels": labels, "columns": columns, "baseline": baseline, "rows": rows, "geomeans": geomeans}


def _describe(label, path, doc) -> str:
    m, s = doc["machine"], doc["settings"]
    versions = m.get("versions") or {}
    libs = ", ".join(f"{k} {v}" for k, v in versions.items() if v and k in ("fastconv", "numpy", "numba", "torch", "cupy"))
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return (f"  {label}: {path} - {m.get('cpu_model')}{gpu}, {s.get('threads')} thread(s), {s.get('dtype')}, "
            f"{libs}; {doc.get('created', '')}")


def format_table(comparison: dict) -> str:
    columns, baseline = comparison["columns"], comparison["baseline"]
    name_width = min(max([len(r["name"]) for r in comparison["rows"]] + [5]) + 1, 45)
    col_width = max(10, max(len(c) for c in columns) + 4)
    header = f"{'shape':<{name_width}} dir "
    for column in columns:
        header += f"{column + ' ms':>{col_width}}" + ("" if column == baseline else f"{'ratio':>8}")
    lines = [header, "-" * len(header)]
    for row in comparison["rows"]:
        name = row["name"] + ("*" if row["differs"] else "")
        for d in DIRECTIONS:
            first = d == "forward"
            line = f"{(name[:name_width - 1] if first else ''):<{name_width}} {d[:1]}wd "
            for column in columns:
                ms = row["ms"].get(column)
                line += f"{ms[d]:{col_width}.3f}" if ms else f"{'-':>{col_width}}"
                if column != baseline:
                    ratio = row["ratios"].get(column)
                    line += f"{ratio[d]:7.2f}x" if ratio else f"{'-':>8}"
            lines.append(line.rstrip())
    lines.append("")
    lines.append(f"geomean of {baseline} ms / column ms over the shapes both have (>1: column faster):")
    for column, g in comparison["geomeans"].items():
        lines.append(f"  {column:<{col_width}} fwd {g['forward']:.2f}x  bwd {g['backward']:.2f}x  "
                     f"all {g['all']:.2f}x  ({g['shapes']} shapes)")
    for column in columns:
        if column != baseline and column not in comparison["geomeans"]:
            lines.append(f"  {column:<{col_width}} no shape in common with {baseline}")
    partial = [row for row in comparison["rows"] if row["missing"]]
    if partial:
        lines.append("")
        lines.append("shapes present in only some files:")
        for row in partial:
            lines.append(f"  {row['name']}: in {', '.join(row['present'])}; missing from {', '.join(row['missing'])}")
    if any(row["differs"] for row in comparison["rows"]):
        lines.append("")
        lines.append("* the shape's definition differs between files (same name, other fields)")
    return "\n".join(lines)


def run(args) -> int:
    try:
        if len(args.files) < 2:
            raise CompareError("give two or more bench results to compare")
        if args.plot:
            from . import plot

            if plot.unavailable_reason():
                raise CompareError(plot.unavailable_reason())
        docs = [load(path) for path in args.files]
        labels = _labels(args.files, args.labels)
        impls = [s.strip() for s in args.impls.split(",") if s.strip()] if args.impls else None
        comparison = align(docs, labels, impls, args.baseline)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("fastconv compare")
    for label, path, doc in zip(labels, args.files, docs):
        print(_describe(label, path, doc))
    for key in ("dtype", "threads"):
        values = {label: doc["settings"].get(key) for label, doc in zip(labels, docs)}
        if len(set(values.values())) > 1:
            print(f"  note: the files differ in {key}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    print()
    print(format_table(comparison))
    if args.plot:
        from . import plot

        plot.compare_chart(comparison, args.plot)
        print(f"wrote {args.plot}")
    return 0
