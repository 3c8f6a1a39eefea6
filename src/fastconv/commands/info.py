"""python -m fastconv info: backends (and why any is missing), threads, CPU, GPU, versions."""
from __future__ import annotations

import json

import fastconv
from fastconv import machine


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _backend_details(name):
    """Extra facts a backend offers: the C++ ISA, the Numba threading layer and cache."""
    from fastconv import dispatch

    module = dispatch._load(name)
    details = {}
    for attr in ("isa", "threading_layer", "cache_dir"):
        fn = getattr(module, attr, None)
        if callable(fn):
            try:
                details[attr] = fn()
            except Exception as e:  # informational only
                details[attr] = f"unknown ({e})"
    return details


def run(args) -> int:
    info = machine.describe()
    info["backends"] = {}
    for name, why in fastconv.backends().items():
        entry = {"available": why is None}
        if why is None:
            entry.update(_backend_details(name))
        else:
            entry["reason"] = why
        info["backends"][name] = entry
    info["cache_dir"] = _cache_dir()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"fastconv {fastconv.__version__}")
    print("backends:")
    for name, entry in info["backends"].items():
        if entry["available"]:
            extra = ", ".join(f"{k}: {v}" for k, v in entry.items() if k != "available")
            print(f"  {name:<10} available" + (f" ({extra})" if extra else ""))
        else:
            print(f"  {name:<10} unavailable: {entry['reason']}")
    print(f"threads:   {info['threads']} (cores usable: {info['cores']}; FASTCONV_NUM_THREADS or set_num_threads)")
    print(f"cpu:       {info['cpu_model']} ({info['machine']}; {' '.join(info['isa_flags']) or 'no SIMD flags read'})")
    print(f"gpu:       {info['gpu'] or 'none found (no CuPy, no CUDA driver or no device)'}")
    print(f"cache:     {info['cache_dir']}")
    print("versions:  " + ", ".join(f"{k} {v or '-'}" for k, v in info["versions"].items()))
    return 0


def _cache_dir():
    try:
        from fastconv import cache

        return str(cache.directory()) + ('' if cache.enabled() else ' (disabled by FASTCONV_NO_CACHE)')
    except Exception as e:  # the cache module is optional for info
        return f"unknown ({e})"
