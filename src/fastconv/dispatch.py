"""Backend registry and selection (DESIGN §Backends).

Candidates are data: an ordered table of (name, module, array kind). A backend is available
when its module imports and its `unavailable_reason()` returns None; otherwise the reason is
kept so that errors, `backends()` and `python -m fastconv info` can say why.
"""
from __future__ import annotations

import contextlib
import importlib
import threading

# name -> (module, the array library it takes)
_REGISTRY = {
    "cpp": ("fastconv.backends.cpp", "numpy"),
    "numba": ("fastconv.backends.numba", "numpy"),
    "cupy": ("fastconv.backends.cupy", "cupy"),
    "reference": ("fastconv.backends.reference", "numpy"),
}
# Automatic choice per array library, most preferred first.
_AUTO = {"numpy": ("cpp", "numba", "reference"), "cupy": ("cupy",)}

_loaded: dict[str, object] = {}
_reasons: dict[str, str] = {}
_lock = threading.Lock()
_choice: str | None = None  # set by use_backend


def _load(name: str):
    """The backend module, or None with the reason recorded in _reasons."""
    if name in _loaded:
        return _loaded[name]
    if name in _reasons:
        return None
    with _lock:
        if name in _loaded or name in _reasons:
            return _loaded.get(name)
        module_name, _ = _REGISTRY[name]
        try:
            module = importlib.import_module(module_name)
            reason = module.unavailable_reason()
        except Exception as e:  # an import failure is a reason, not a crash
            module, reason = None, f"{type(e).__name__}: {e}"
        if reason is None:
            _loaded[name] = module
        else:
            _reasons[name] = reason
        return _loaded.get(name)


def backends() -> dict[str, str | None]:
    """Every known backend mapped to None when it is available here, else the reason it is not."""
    return {name: (None if _load(name) is not None else _reasons[name]) for name in _REGISTRY}


def _check_name(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}")
    if _load(name) is None:
        available = [n for n, why in backends().items() if why is None]
        raise ValueError(
            f"backend {name!r} is not available: {_reasons[name]}. Available: {', '.join(available)}"
        )
    return name


class use_backend(contextlib.ContextDecorator):
    """Select the backend process-wide: `use_backend("numba")` sets it; `with use_backend("numba"):`
    sets it for the block and restores the previous choice on exit. `use_backend(None)` returns
    to automatic selection (by array type)."""

    def __init__(self, name: str | None):
        global _choice
        if name is not None:
            _check_name(name)
        self.name, self._previous = name, _choice
        _choice = name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _choice
        _choice = self._previous
        return False


def current_backend_name() -> str | None:
    return _choice


def select(backend: str | None, xp):
    """The backend module for this call: argument, else use_backend, else automatic by array type."""
    kind = xp.__name__
    name = backend if backend is not None else current_backend_name()
    if name is None:
        for candidate in _AUTO[kind]:
            if _load(candidate) is not None:
                return _loaded[candidate]
        reasons = "; ".join(f"{c}: {_reasons[c]}" for c in _AUTO[kind])
        raise ValueError(f"no backend available for {kind} arrays ({reasons})")
    _check_name(name)
    if _REGISTRY[name][1] != kind:
        raise TypeError(f"backend {name!r} takes {_REGISTRY[name][1]} arrays, got {kind} arrays")
    return _loaded[name]
