"""A small on-disk cache of JSON values that are only valid on one machine (DESIGN §Threads,
tuning, caches): the benchmark's machine probe now, the C++ autotuner's choices later.

    value = cache.get("probe", {"probe": 1, "dtype": "float32"})   # None when absent
    cache.put("probe", {"probe": 1, "dtype": "float32"}, {"gflops": 101.7})

Every entry is keyed by the fastconv version, the CPU model and ISA flags, the thread count
and the caller's key (any JSON value). Each entry is one file,
`<dir>/<namespace>/<sha256 of the full key>.json`, holding the full key next to the value, so
concurrent writers of different entries never touch the same file and a hash collision is
detected rather than believed. Writes go to a temporary file that is renamed into place
(os.replace is atomic on POSIX and Windows), so a reader sees the old entry or the new one,
never half of one. A file that cannot be read or parsed is ignored with a warning and
overwritten by the next put.

The directory is $FASTCONV_CACHE_DIR, else ~/.cache/fastconv. FASTCONV_NO_CACHE=1 turns the
cache off: get returns None and put does nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")


def enabled() -> bool:
    return os.environ.get("FASTCONV_NO_CACHE", "").strip() in ("", "0")


def directory() -> Path:
    env = os.environ.get("FASTCONV_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastconv"


def _full_key(namespace: str, key, threads: int | None) -> dict:
    from . import __version__, get_num_threads
    from .machine import cpu_flags, cpu_model

    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(f"cache namespace must be a non-empty name of letters, digits, '_', '.', '-'; "
                         f"got {namespace!r}")
    return {
        "fastconv": __version__,
        "cpu_model": cpu_model(),
        "isa": cpu_flags(),
        "threads": get_num_threads() if threads is None else int(threads),
        "key": key,
    }


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _locate(namespace: str, key, threads: int | None) -> tuple[dict, str, Path]:
    """The full key, its canonical text (tuples and lists alike) and the entry's file."""
    full_key = _full_key(namespace, key, threads)
    try:
        canonical = _canonical(full_key)
    except (TypeError, ValueError) as e:
        raise TypeError(f"cache key must be a JSON value, got {key!r}: {e}") from None
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return full_key, canonical, directory() / namespace / f"{digest}.json"


def get(namespace: str, key, *, threads: int | None = None):
    """The value stored under (machine, threads, key) in namespace, or None.

    threads defaults to fastconv.get_num_threads(); pass the count the value was measured at
    when that is not the current setting."""
    if not enabled():
        return None
    _, canonical, path = _locate(namespace, key, threads)
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError covers JSON and UTF-8 decoding errors
        warnings.warn(f"fastconv cache: ignoring unreadable file {path}: {e}", RuntimeWarning, stacklevel=2)
        return None
    if not isinstance(entry, dict) or "key" not in entry or "value" not in entry:
        warnings.warn(f"fastconv cache: ignoring corrupt file {path}: not a {{'key', 'value'}} object",
                      RuntimeWarning, stacklevel=2)
        return None
    if _canonical(entry["key"]) != canonical:  # a sha256 collision, or a file copied by hand
        return None
    return entry["value"]


def put(namespace: str, key, value, *, threads: int | None = None) -> None:
    """Store a JSON value under (machine, threads, key) in namespace, atomically.

    A cache that cannot be written (read-only home, full disk) costs a warning, not the run."""
    if not enabled():
        return
    full_key, _, path = _locate(namespace, key, threads)
    try:
        text = json.dumps({"key": full_key, "value": value}, indent=1, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"cache value must be a JSON value (finite numbers), got {value!r}: {e}") from None
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"fastconv cache: could not write {path}: {e}", RuntimeWarning, stacklevel=2)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
