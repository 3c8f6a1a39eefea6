"""Benchmarks: `python -m fastconv bench` (cli.py) and `compare` (compare.py), and the pieces the
pytest-benchmark suites in benchmarks/ share with them.

shapes.py    shapes files: load, validate, flops and bytes per problem
workloads.py inputs, and each implementation's forward/backward as zero-argument calls
peers.py     the same calls through PyTorch
timing.py    calibrated, interleaved rounds; medians
probe.py     the machine's FMA peak and memory bandwidth (cached)
report.py    tables and geomeans;  plot.py  PNG charts
"""
