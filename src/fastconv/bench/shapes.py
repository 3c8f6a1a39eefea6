"""Shapes files (DESIGN §Shapes files): load, validate, and describe each problem.

    {"shapes": [{"name": "...", "group": "...", "op": "conv2d", "N": 64, "C": 32, "H": 13, "W": 13,
                 "K": 64, "R": 3, "S": 3, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}, ...]}

For conv_transpose2d, H x W is the input size and C -> K is in -> out channels (weight
(C, K/groups, R, S)); pools give "kernel" instead of K, R, S. Every problem is reported as
`ShapesError("<file>: shape #i 'name': <problem>")`: the structure is checked here, the
geometry (output size, groups, padding limits) by fastconv's own argument checks, so a shape the
ops would refuse is refused at load time with the ops' message, before any timing starts.
"""
from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .. import _params as P

_COMMON_REQUIRED = ("name", "op", "N", "C", "H", "W")
_COMMON_OPTIONAL = ("group", "comment")
# op -> (required fields beyond the common ones, {optional field: default})
_FIELDS = {
    "conv2d": (("K", "R", "S"), {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "conv_transpose2d": (("K", "R", "S"),
                         {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, "groups": 1}),
    "max_pool2d": (("kernel",), {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}),
    "avg_pool2d": (("kernel",), {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}),
}
OPS = tuple(_FIELDS)
_SIZES = ("N", "C", "H", "W", "K", "R", "S", "groups")  # positive ints
_PAIRS = ("kernel", "stride", "padding", "output_padding", "dilation")  # int or [h, w]
_BOOLS = ("ceil_mode", "count_include_pad")


class ShapesError(ValueError):
    """A shapes file that cannot be used; the message names the file and the problem."""


def default_path() -> Path:
    """The seed shapes shipped with the package."""
    return Path(str(resources.files("fastconv.bench") / "seed_shapes.json"))


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: the fields as written in the file, with defaults filled in."""

    name: str
    op: str
    group: str | None
    spec: dict = field(repr=False)  # every field, defaults included (what --json records)

    # ------------------------------------------------------------------ arrays and arguments

    @property
    def x_shape(self):
        s = self.spec
        return (s["N"], s["C"], s["H"], s["W"])

    @property
    def weight_shape(self):
        s = self.spec
        if self.op == "conv2d":
            return (s["K"], s["C"] // s["groups"], s["R"], s["S"])
        if self.op == "conv_transpose2d":
            return (s["C"], s["K"] // s["groups"], s["R"], s["S"])
        return None

    @property
    def bias_shape(self):
        return (self.spec["K"],) if self.is_conv else None

    @property
    def is_conv(self) -> bool:
        return self.op in ("conv2d", "conv_transpose2d")

    @property
    def kwargs(self) -> dict:
        """The op's keyword arguments, named as in fastconv and torch.nn.functional."""
        s = self.spec
        if self.op == "conv2d":
            keys = ("stride", "padding", "dilation", "groups")
        elif self.op == "conv_transpose2d":
            keys = ("stride", "padding", "output_padding", "groups", "dilation")
        elif self.op == "max_pool2d":
            keys = ("stride", "padding", "dilation", "ceil_mode")
        else:
            keys = ("stride", "padding", "ceil_mode", "count_include_pad")
        out = {k: _as_arg(s[k]) for k in keys}
        if not self.is_conv:
            out = {"kernel_size": _as_arg(s["kernel"]), **out}
        return out

    def geometry(self):
        """fastconv's geometry record (validating the shape): for conv_transpose2d, that of the
        convolution whose backward-data it is (see _params.conv_transpose_params)."""
        x = np.empty(self.x_shape, np.float32)  # never touched: empty pages cost nothing
        kw = self.kwargs
        if self.op == "conv2d":
            return P.conv_params(x, np.empty(self.weight_shape, np.float32), None, kw["stride"], kw["padding"],
                                 kw["dilation"], kw["groups"])[5]
        if self.op == "conv_transpose2d":
            return P.conv_transpose_params(x, np.empty(self.weight_shape, np.float32), None, kw["stride"],
                                           kw["padding"], kw["output_padding"], kw["groups"], kw["dilation"])[5]
        return P.pool_params(self.op, x, kw["kernel_size"], kw["stride"], kw["padding"], kw.get("dilation", 1),
                             kw["ceil_mode"], count_include_pad=kw.get("count_include_pad", True))[3]

    @property
    def out_shape(self):
        g = self.geometry()
        return g.x_shape if self.op == "conv_transpose2d" else g.y_shape

    # ------------------------------------------------------------------ work

    def flops(self) -> dict | None:
        """Floating-point operations (2 per multiply-add) of the forward and of the backward
        (grad_x and grad_weight: each as many multiply-adds as the forward; grad_bias, a plain
        sum, is not counted). None for pools: they are measured in bytes."""
        if not self.is_conv:
            return None
        forward = self.geometry().flops
        return {"forward": forward, "backward": 2 * forward}

    def bytes_moved(self, dtype) -> dict | None:
        """Compulsory memory traffic of a pool: every array read or written once. Max pooling
        writes its int64 indices in the forward and reads them in the backward. None for convs."""
        if self.is_conv:
            return None
        item = np.dtype(dtype).itemsize
        x_bytes = int(np.prod(self.x_shape)) * item
        out_elems = int(np.prod(self.out_shape))
        y_bytes = out_elems * item
        index_bytes = out_elems * 8 if self.op == "max_pool2d" else 0
        # forward: read x, write y (+ indices); backward: read grad_y (+ indices), write grad_x
        total = x_bytes + y_bytes + index_bytes
        return {"forward": total, "backward": total}


def _as_arg(v):
    return tuple(v) if isinstance(v, list) else v


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_fields(entry: dict) -> str | None:
    """The first structural problem of one entry, or None."""
    op = entry.get("op")
    if op not in _FIELDS:
        return f"'op' must be one of {', '.join(OPS)}, got {op!r}"
    required, optional = _FIELDS[op]
    missing = [k for k in _COMMON_REQUIRED + required if k not in entry]
    if missing:
        return f"missing field(s) {', '.join(missing)} for op {op}"
    unknown = sorted(set(entry) - set(_COMMON_REQUIRED + _COMMON_OPTIONAL + required) - set(optional))
    if unknown:
        allowed = ", ".join(_COMMON_REQUIRED + _COMMON_OPTIONAL + required + tuple(optional))
        return f"unknown field(s) {', '.join(unknown)} for op {op} (allowed: {allowed})"
    if not isinstance(entry["name"], str) or not entry["name"].strip():
        return f"'name' must be a non-empty string, got {entry['name']!r}"
    if "group" in entry and not isinstance(entry["group"], str):
        return f"'group' must be a string, got {entry['group']!r}"
    for k, v in entry.items():
        if k in _SIZES and not (_is_int(v) and v > 0):
            return f"'{k}' must be a positive integer, got {v!r}"
        if k in _PAIRS and v is not None and not (
                _is_int(v) or (isinstance(v, list) and len(v) == 2 and all(_is_int(e) for e in v))):
            return f"'{k}' must be an integer or a list of 2 integers, got {v!r}"
        if k in _BOOLS and not isinstance(v, bool):
            return f"'{k}' must be true or false, got {v!r}"
    groups = entry.get("groups", 1)
    if "K" in entry and (entry["C"] % groups or entry["K"] % groups):
        # checked here because the weight shape is derived from C // groups and K // groups
        return f"C={entry['C']} (in channels) and K={entry['K']} (out channels) must be divisible by groups={groups}"
    return None


def parse(data, source: str = "<shapes>") -> list[Shape]:
    """Shapes from an already-decoded shapes document; `source` names it in errors."""
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ShapesError(f"{source}: expected a JSON object with a \"shapes\" list, "
                          f"got {type(data).__name__}{'' if not isinstance(data, dict) else ' without one'}")
    if not data["shapes"]:
        raise ShapesError(f"{source}: the \"shapes\" list is empty")
    shapes, seen = [], {}
    for i, entry in enumerate(data["shapes"]):
        where = f"{source}: shape #{i}"
        if not isinstance(entry, dict):
            raise ShapesError(f"{where}: expected an object, got {type(entry).__name__}")
        if isinstance(entry.get("name"), str):
            where += f" {entry['name']!r}"
        problem = _check_fields(entry)
        if problem:
            raise ShapesError(f"{where}: {problem}")
        if entry["name"] in seen:
            raise ShapesError(f"{where}: duplicate name (shape #{seen[entry['name']]} has it too); "
                              f"names identify shapes in results and comparisons")
        seen[entry["name"]] = i
        _, optional = _FIELDS[entry["op"]]
        spec = {**optional, **entry}
        shape = Shape(name=entry["name"], op=entry["op"], group=entry.get("group"), spec=spec)
        try:
            shape.geometry()
        except (ValueError, TypeError) as e:
            raise ShapesError(f"{where}: {e}") from None
        shapes.append(shape)
    return shapes


def load(path=None) -> list[Shape]:
    """The shapes of a file (default: the seed shapes shipped with fastconv)."""
    path = Path(path) if path is not None else default_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ShapesError(f"{path}: no such shapes file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ShapesError(f"{path}: cannot read the shapes file: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ShapesError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    return parse(data, str(path))


def select(shapes: list[Shape], only: str | None) -> list[Shape]:
    """The shapes whose name, group or op contains `only` (case-insensitive); all when None."""
    if not only:
        return list(shapes)
    needle = only.lower()
    return [s for s in shapes if any(needle in (v or "").lower() for v in (s.name, s.group, s.op))]
