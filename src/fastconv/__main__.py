"""python -m fastconv {train,bench,compare,verify,info} ...

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`;
this file only wires them up, importing a command's module when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "train": ("fastconv.commands.train", "train one of the seed networks on MNIST"),
    "bench": ("fastconv.bench.cli", "time the ops on a shapes file against PyTorch"),
    "compare": ("fastconv.bench.compare", "compare two or more `bench --json` results side by side"),
    "verify": ("fastconv.commands.verify", "check every available backend against the NumPy reference"),
    "info": ("fastconv.commands.info", "backends (and why any is missing), threads, CPU, GPU, versions"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    argv = sys.argv[1:] if argv is None else argv
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (so `info` works without matplotlib).
        if argv and argv[0] == name:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
