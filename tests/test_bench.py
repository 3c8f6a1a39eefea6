"""The benchmark machinery: shapes files and their errors, the bench JSON document, compare,
the torch peer's calls, timing, the probe and the on-disk cache."""
from __future__ import annotations

import argparse
import json
import os
import platform
import warnings

import numpy as np
import pytest
import torch

import fastconv
from fastconv import cache
from fastconv.bench import cli, compare, peers, probe, report, shapes, timing, workloads
from fastconv.bench.shapes import ShapesError

from conftest import BACKENDS, CPU_BACKENDS, to_numpy

# One small problem per op: the bench and compare tests run on these in well under a second.
TINY = [
    {"name": "tiny conv", "group": "g1", "op": "conv2d", "N": 2, "C": 3, "H": 8, "W": 8, "K": 4, "R": 3, "S": 3,
     "stride": 1, "padding": 1, "dilation": 1, "groups": 1},
    {"name": "tiny tconv", "group": "g1", "op": "conv_transpose2d", "N": 2, "C": 4, "H": 5, "W": 5, "K": 2,
     "R": 4, "S": 4, "stride": 2, "padding": 1, "output_padding": 0, "dilation": 1, "groups": 2},
    {"name": "tiny maxpool", "group": "g2", "op": "max_pool2d", "N": 2, "C": 3, "H": 8, "W": 8, "kernel": 2,
     "stride": 2, "padding": 0},
    {"name": "tiny avgpool", "group": "g2", "op": "avg_pool2d", "N": 2, "C": 3, "H": 9, "W": 9, "kernel": 3,
     "stride": 2, "padding": 1},
]
FAKE_PROBE = {"threads": 1, "fma_peak_gflops": {"float32": 100.0, "float64": 50.0}, "fma_method": "fake",
              "memory_gbs": 20.0, "memory_method": "fake", "cached": True}


def write_shapes(path, entries):
    path.write_text(json.dumps({"shapes": entries}))
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTCONV_NO_CACHE", raising=False)


# --------------------------------------------------------------------------- shapes files

def test_seed_shapes_load_and_describe_themselves():
    seed = shapes.load()
    assert len(seed) == 18 and {s.op for s in seed} == {"conv2d", "conv_transpose2d", "max_pool2d"}
    tconv = next(s for s in seed if s.name.startswith("decoder.tconv1"))
    assert tconv.weight_shape == (32, 64, 4, 4) and tconv.out_shape == (64, 64, 28, 28)
    # the transposed conv's multiply-adds: every input pixel times C_out x R x S
    assert tconv.flops() == {"forward": 2 * 64 * 32 * 14 * 14 * 64 * 16, "backward": 4 * 64 * 32 * 14 * 14 * 64 * 16}
    pool = next(s for s in seed if s.op == "max_pool2d")
    assert pool.flops() is None and pool.bytes_moved("float32")["forward"] > 0
    assert [s.name for s in shapes.select(seed, "DCGAN.g")] == [s.name for s in seed if s.name.startswith("dcgan.G")]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ('[1, 2]', 'expected a JSON object with a "shapes" list'),
    ('{"shapes": []}', 'the "shapes" list is empty'),
    ('{"shapes": [3]}', "shape #0: expected an object"),
    ('{"shapes": [{"name": "a", "op": "conv3d"}]}', "'op' must be one of"),
    ('{"shapes": [{"name": "a", "op": "conv2d", "N": 1, "C": 1, "H": 5, "W": 5, "K": 1, "R": 3}]}',
     "missing field(s) S"),
    ('{"shapes": [{"name": "a", "op": "conv2d", "N": 1, "C": 1, "H": 5, "W": 5, "K": 1, "R": 3, "S": 3, '
     '"strid": 2}]}', "unknown field(s) strid"),
    ('{"shapes": [{"name": "a", "op": "conv2d", "N": 0, "C": 1, "H": 5, "W": 5, "K": 1, "R": 3, "S": 3}]}',
     "'N' must be a positive integer"),
    ('{"shapes": [{"name": "a", "op": "conv2d", "N": 1, "C": 1, "H": 5, "W": 5, "K": 1, "R": 3, "S": 3, '
     '"padding": "same"}]}', "'padding' must be an integer or a list of 2 integers"),
    ('{"shapes": [{"name": "a", "op": "conv2d", "N": 1, "C": 1, "H": 2, "W": 2, "K": 1, "R": 3, "S": 3}]}',
     "kernel can't be greater than the padded input"),
    ('{"shapes": [{"name": "a", "op": "conv2d", "N": 1, "C": 3, "H": 5, "W": 5, "K": 4, "R": 3, "S": 3, '
     '"groups": 2}]}', "divisible by groups"),
    ('{"shapes": [{"name": "a", "op": "max_pool2d", "N": 1, "C": 1, "H": 5, "W": 5, "kernel": 2, "padding": 2}]}',
     "padding should be at most half of kernel size"),
    ('{"shapes": [{"name": "a", "op": "avg_pool2d", "N": 1, "C": 1, "H": 5, "W": 5, "kernel": 2}, '
     '{"name": "a", "op": "avg_pool2d", "N": 1, "C": 1, "H": 5, "W": 5, "kernel": 3}]}', "shape #1 'a': duplicate name"),
])
def test_bad_shapes_files_name_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad_shapes.json"
    path.write_text(content)
    with pytest.raises(ShapesError) as info:
        shapes.load(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_missing_shapes_file(tmp_path):
    with pytest.raises(ShapesError, match="no such shapes file") as info:
        shapes.load(tmp_path / "nowhere.json")
    assert "nowhere.json" in str(info.value)


def test_bench_command_reports_a_bad_shapes_file(tmp_path, capsys):
    path = write_shapes(tmp_path / "oops.json", [{"name": "x", "op": "conv2d"}])
    assert cli.run(bench_args(shapes=str(path))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "oops.json" in err and "missing field(s)" in err


# --------------------------------------------------------------------------- bench JSON document

def bench_args(**overrides):
    args = dict(shapes=None, only=None, backends=None, peers=None, dtype="float32", threads=None, repeat=2,
                min_time=0.5, json=None, plot=None, reprobe=False)
    args.update(overrides)
    return argparse.Namespace(**args)


@pytest.fixture
def fake_probe(monkeypatch):
    monkeypatch.setattr(probe, "get", lambda threads, refresh=False: dict(FAKE_PROBE, threads=threads))


@pytest.fixture
def bench_doc(tmp_path, fake_probe, capsys):
    shapes_path = write_shapes(tmp_path / "tiny.json", TINY)
    out = tmp_path / "result.json"
    png = tmp_path / "result.png"
    threads = fastconv.get_num_threads()
    try:
        code = cli.run(bench_args(shapes=str(shapes_path), backends=",".join(CPU_BACKENDS), peers="torch",
                                  threads=1, json=str(out), plot=str(png)))
    finally:
        fastconv.set_num_threads(threads)
    assert code == 0
    printed = capsys.readouterr().out
    # strict JSON: NaN / Infinity would not load in other tools
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    return doc, printed, png


def test_bench_json_schema(bench_doc):
    doc, printed, png = bench_doc
    assert doc["schema"] == report.SCHEMA
    assert doc["settings"]["threads"] == 1 and doc["settings"]["dtype"] == "float32"
    assert doc["settings"]["backends"] == CPU_BACKENDS and doc["settings"]["peers"] == ["torch"]
    assert doc["settings"]["heap"] == timing.steady_heap()  # what the run fixed (None without glibc)
    assert doc["impls"] == CPU_BACKENDS + ["torch"]
    machine = doc["machine"]
    for key in ("cpu_model", "cores", "isa_flags", "threads", "gpu", "versions", "probe", "load_average"):
        assert key in machine
    assert {"fastconv", "numpy", "numba", "torch", "cupy"} <= set(machine["versions"])
    assert machine["probe"]["fma_peak_gflops"]["float32"] == 100.0

    assert [r["name"] for r in doc["results"]] == [t["name"] for t in TINY]
    for r, spec in zip(doc["results"], TINY):
        assert r["op"] == spec["op"] and r["group"] == spec["group"]
        assert {k: r["shape"][k] for k in spec} == spec  # defaults filled in, nothing changed
        is_conv = r["op"] in ("conv2d", "conv_transpose2d")
        assert (r["flops"] is not None) == is_conv and (r["bytes"] is not None) != is_conv
        for name in doc["impls"]:
            e = r["impls"][name]
            assert e["kind"] == ("peer" if name == "torch" else "backend") and e["device"] == "cpu"
            for d in ("forward", "backward"):
                t = e[d]
                assert len(t["samples_ms"]) == 2 and t["reps"] >= 1
                assert t["min_ms"] <= t["median_ms"] <= t["max_ms"]
                if is_conv:
                    assert t["gflops"] == pytest.approx(r["flops"][d] / t["median_ms"] / 1e6)
                    assert t["pct_peak"] == pytest.approx(t["gflops"])  # the fake peak is 100 GFLOP/s
                else:
                    assert t["gbs"] == pytest.approx(r["bytes"][d] / t["median_ms"] / 1e6)
                    assert t["pct_bandwidth"] == pytest.approx(5 * t["gbs"])  # the fake bandwidth is 20 GB/s
            if name != "torch":
                ratio = e["vs_peer"]
                assert ratio["peer"] == "torch"
                for d in ("forward", "backward"):
                    assert ratio[d] == pytest.approx(r["impls"]["torch"][d]["median_ms"] / e[d]["median_ms"])
    for name in CPU_BACKENDS:
        g = doc["geomeans"][name]
        ratios = [r["impls"][name]["vs_peer"]["forward"] for r in doc["results"]]
        assert g["vs_peer"]["forward"] == pytest.approx(np.exp(np.mean(np.log(ratios))))
        assert set(g) == {"vs_peer", "pct_peak", "pct_bandwidth"}
    assert "pct_peak" in doc["geomeans"]["torch"]

    for spec in TINY:
        assert spec["name"] in printed
    assert "geomean over shapes" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_implementation_that_fails_is_recorded_not_fatal(tmp_path, fake_probe, monkeypatch, capsys):
    def broken(shape, inputs, device="cpu"):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(peers, "torch_impl", broken)
    out = tmp_path / "r.json"
    shapes_path = write_shapes(tmp_path / "one.json", TINY[:1])
    assert cli.run(bench_args(shapes=str(shapes_path), backends=CPU_BACKENDS[0], json=str(out), repeat=1)) == 0
    doc = json.loads(out.read_text())
    assert doc["results"][0]["impls"]["torch"] == {"kind": "peer", "device": "cpu",
                                                   "error": "RuntimeError: no such kernel"}
    assert "vs_peer" not in doc["results"][0]["impls"][CPU_BACKENDS[0]]
    assert "RuntimeError: no such kernel" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, message", [
    (dict(backends="cpp,nosuch"), "unknown backend 'nosuch'"),
    (dict(peers="jax"), "unknown peer 'jax'"),
    (dict(only="no-shape-has-this"), "matches no shape"),
    (dict(repeat=0), "--repeat must be a positive integer"),
    (dict(threads=0), "--threads must be a positive integer"),
])
def test_bench_usage_errors(overrides, message, capsys):
    assert cli.run(bench_args(**overrides)) == 2
    assert message in capsys.readouterr().err


def test_bench_refuses_an_unavailable_backend(monkeypatch, capsys):
    monkeypatch.setattr(fastconv, "backends", lambda: {"cpp": "not built", "numba": None, "cupy": "no GPU",
                                                       "reference": None})
    assert cli.run(bench_args(backends="cpp")) == 2
    assert "backend 'cpp' is not available: not built" in capsys.readouterr().err


# --------------------------------------------------------------------------- compare

def fake_doc(label, timings, threads=2):
    """A bench document with `timings` {shape name: {impl: (forward ms, backward ms)}}."""
    impls = list(dict.fromkeys(i for per_shape in timings.values() for i in per_shape))
    results = [{"name": name, "group": None, "op": "conv2d", "shape": {"name": name}, "flops": None, "bytes": None,
                "impls": {i: {"kind": "peer" if i == "torch" else "backend", "device": "cpu",
                              "forward": {"median_ms": f}, "backward": {"median_ms": b}}
                          for i, (f, b) in per_shape.items()}}
               for name, per_shape in timings.items()]
    return {"schema": report.SCHEMA, "created": label, "settings": {"dtype": "float32", "threads": threads},
            "machine": {"cpu_model": f"cpu {label}", "versions": {}}, "impls": impls, "results": results,
            "geomeans": {}}


def test_compare_aligns_shapes_and_keeps_the_ones_only_some_files_have():
    a = fake_doc("a", {"s1": {"cpp": (1.0, 2.0), "torch": (2.0, 2.0)}, "s2": {"cpp": (4.0, 4.0), "torch": (4.0, 8.0)},
                       "only_a": {"cpp": (1.0, 1.0), "torch": (1.0, 1.0)}})
    b = fake_doc("b", {"s2": {"cpp": (2.0, 2.0)}, "s1": {"cpp": (2.0, 1.0)}, "only_b": {"cpp": (3.0, 3.0)}})
    c = fake_doc("c", {"s1": {"cpp": (0.5, 0.5)}})
    comp = compare.align([a, b, c], ["A", "B", "C"])
    assert comp["columns"] == ["A:cpp", "A:torch", "B:cpp", "C:cpp"] and comp["baseline"] == "A:cpp"
    assert [r["name"] for r in comp["rows"]] == ["s1", "s2", "only_a", "only_b"]
    rows = {r["name"]: r for r in comp["rows"]}
    assert rows["s1"]["ratios"]["B:cpp"] == {"forward": 0.5, "backward": 2.0}
    assert rows["s1"]["ratios"]["C:cpp"] == {"forward": 2.0, "backward": 4.0}
    assert rows["only_a"]["missing"] == ["B", "C"] and rows["only_b"]["present"] == ["B"]
    assert rows["only_b"]["ratios"] == {} and rows["only_b"]["ms"]["B:cpp"]["forward"] == 3.0
    g = comp["geomeans"]["B:cpp"]
    assert g["shapes"] == 2 and g["forward"] == pytest.approx(np.sqrt(0.5 * 2.0))
    assert comp["geomeans"]["C:cpp"]["shapes"] == 1

    text = compare.format_table(comp)
    assert "shapes present in only some files:" in text
    assert "only_a: in A; missing from B, C" in text and "only_b: in B; missing from A, C" in text
    for name in ("s1", "s2", "only_a", "only_b"):
        assert name in text

    assert compare.align([a, b], ["A", "B"], impls=["cpp"], baseline="B:cpp")["columns"] == ["A:cpp", "B:cpp"]
    with pytest.raises(compare.CompareError, match="not a column"):
        compare.align([a, b], ["A", "B"], baseline="Z:cpp")


def test_compare_marks_a_shape_defined_differently():
    a = fake_doc("a", {"s": {"cpp": (1.0, 1.0)}})
    b = fake_doc("b", {"s": {"cpp": (1.0, 1.0)}})
    b["results"][0]["shape"] = {"name": "s", "N": 3}
    comp = compare.align([a, b], ["A", "B"])
    assert comp["rows"][0]["differs"]
    assert "s*" in compare.format_table(comp)


def test_compare_command_on_bench_results(tmp_path, bench_doc, capsys):
    doc, _, _ = bench_doc
    first, second = tmp_path / "before.json", tmp_path / "after.json"
    first.write_text(json.dumps(doc))
    doc["results"] = doc["results"][1:]  # "tiny conv" is then only in before.json
    second.write_text(json.dumps(doc))
    png = tmp_path / "cmp.png"
    args = argparse.Namespace(files=[str(first), str(second)], impls=None, labels=None, baseline=None, plot=str(png))
    assert compare.run(args) == 0
    out = capsys.readouterr().out
    assert "before:" in out and "after:" in out and f"after:{CPU_BACKENDS[0]} ms" in out
    assert "tiny conv: in before; missing from after" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("content, problem", [
    ("{", "not valid JSON"),
    ('{"schema": "something-else"}', "not a `python -m fastconv bench --json` result"),
    ('{"schema": "fastconv-bench/1", "results": {}}', "field 'results' is missing or not a list"),
])
def test_compare_names_a_bad_file(tmp_path, content, problem, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(fake_doc("g", {"s": {"cpp": (1.0, 1.0)}})))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    args = argparse.Namespace(files=[str(good), str(bad)], impls=None, labels=None, baseline=None, plot=None)
    assert compare.run(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and problem in err


def test_compare_needs_two_files(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(fake_doc("g", {"s": {"cpp": (1.0, 1.0)}})))
    args = argparse.Namespace(files=[str(good)], impls=None, labels=None, baseline=None, plot=None)
    assert compare.run(args) == 2
    assert "two or more" in capsys.readouterr().err


# --------------------------------------------------------------------------- what is timed

@pytest.mark.parametrize("spec", TINY, ids=[t["name"] for t in TINY])
def test_torch_peer_computes_autograds_gradients_and_fastconvs(spec):
    """The peer's direct ATen backward calls give torch.autograd's gradients, and both sides of a
    ratio compute the same thing (float64, so that the comparison is tight)."""
    shape = shapes.parse({"shapes": [spec]})[0]
    inputs = workloads.make_inputs(shape, np.float64)
    peer = peers.torch_impl(shape, inputs)
    t = {k: torch.from_numpy(v).requires_grad_(k != "grad_out") for k, v in inputs.items()}
    f = getattr(torch.nn.functional, shape.op)
    if shape.is_conv:
        y = f(t["x"], t["weight"], t["bias"], **shape.kwargs)
        expected = torch.autograd.grad(y, (t["x"], t["weight"], t["bias"]), t["grad_out"])
    else:
        y = f(t["x"], **shape.kwargs)
        expected = torch.autograd.grad(y, t["x"], t["grad_out"])
    got = peer.backward()
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.numpy(), e.numpy())

    for backend in BACKENDS:
        ours = to_numpy(workloads.backend_impl(backend, shape, inputs).backward())
        ours = ours if isinstance(ours, tuple) else (ours,)
        for o, e in zip(ours, expected):
            np.testing.assert_allclose(o, e.numpy(), rtol=1e-9, atol=1e-9)
        forward = to_numpy(workloads.backend_impl(backend, shape, inputs).forward())
        forward = forward[0] if isinstance(forward, tuple) else forward
        theirs = peer.forward()
        theirs = theirs[0] if isinstance(theirs, tuple) else theirs
        np.testing.assert_allclose(forward, theirs.numpy(), rtol=1e-9, atol=1e-9)


def test_timing_calibrates_and_interleaves():
    calls = []
    fns = {"a": (lambda: calls.append("a"), "cpu"), "b": (lambda: calls.append("b"), "cpu")}
    out = timing.rounds(fns, repeat=3, min_time=1e-4)
    assert set(out) == {"a", "b"}
    for k in out:
        assert len(out[k]["samples_s"]) == 3 and out[k]["reps"] >= 1
        assert out[k]["reps"] * out[k]["samples_s"][0] > 0
    ra, rb = out["a"]["reps"], out["b"]["reps"]
    # after calibration (and warm-up), three rounds in rotated order: a b, b a, a b
    assert calls[-3 * (ra + rb):] == ["a"] * ra + ["b"] * rb + ["b"] * rb + ["a"] * ra + ["a"] * ra + ["b"] * rb
    assert timing.rounds({}, repeat=3, min_time=1e-4) == {}
    assert timing.calibrate(lambda: None, 2e-3) * 1e-9 < 1  # returns, however fast the call
    assert timing.geomean([1.0, 4.0, None]) == pytest.approx(2.0) and timing.geomean([]) is None


# --------------------------------------------------------------------------- probe

def test_probe_kernels_measure_something(monkeypatch):
    monkeypatch.setattr(probe, "_BUDGET_S", 0.1)
    gflops, bits, contended = probe.fma_peak_gflops("float32", threads=1, seconds=0.005)
    assert gflops > 0.1 and bits in (128, 256, 512) and contended in (True, False)
    gbs, contended = probe.memory_gbs(threads=2, nbytes=4 << 20)
    assert gbs > 0.01 and contended in (True, False)


def test_probe_prefers_uncontended_runs(monkeypatch):
    runs = iter([(1.0, [0.5, 1.0]), (2.0, [2.0, 2.0]), (1.0, [0.95, 0.95])] + [(4.0, [1.0, 1.0])] * 100)
    monkeypatch.setattr(probe, "_parallel_run", lambda work, threads: next(runs))
    monkeypatch.setattr(probe, "_MIN_RUNS", 3)
    # runs 2 and 3 were uncontended (CPU >= 90 % of wall): the best of them, amount / wall
    assert probe._best_rate(None, 2, 10.0) == (10.0, False)
    monkeypatch.setattr(probe, "_BUDGET_S", 0.0)
    # never uncontended: the best per-thread rate over CPU time, flagged
    assert probe._best_rate(None, 2, 10.0) == (10.0, True)


def test_probe_is_cached_per_thread_count(monkeypatch):
    measured = []

    def fake_measure(threads):
        measured.append(threads)
        return {"threads": threads, "fma_peak_gflops": {"float32": 1.0, "float64": 0.5}, "memory_gbs": 2.0,
                "contended": threads == 3}

    monkeypatch.setattr(probe, "measure", fake_measure)
    assert probe.get(2)["cached"] is False
    assert probe.get(2) == {"threads": 2, "fma_peak_gflops": {"float32": 1.0, "float64": 0.5}, "memory_gbs": 2.0,
                            "contended": False, "cached": True}
    probe.get(1)
    probe.get(2, refresh=True)
    probe.get(3)
    probe.get(3)  # a contended probe is not cached: measured again
    assert measured == [2, 1, 2, 3, 3]


# --------------------------------------------------------------------------- cache

def test_cache_round_trip_and_keys(tmp_path):
    assert cache.get("tuning", {"op": "conv"}) is None
    cache.put("tuning", {"op": "conv"}, {"algo": "direct", "tile": [4, 8]})
    cache.put("tuning", {"op": "pool", "kernel": (2, 2)}, 7)  # tuples are stored as JSON lists
    assert cache.get("tuning", {"op": "pool", "kernel": (2, 2)}) == 7 == cache.get("tuning", {"op": "pool", "kernel": [2, 2]})
    assert cache.get("tuning", {"op": "conv"}) == {"algo": "direct", "tile": [4, 8]}
    assert cache.get("tuning", {"op": "conv", "dtype": "float64"}) is None  # the caller's key
    assert cache.get("tuning", {"op": "conv"}, threads=fastconv.get_num_threads() + 1) is None  # threads
    assert cache.get("other", {"op": "conv"}) is None  # namespace
    files = list((tmp_path / "cache" / "tuning").iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)
    stored = next(s for s in map(json.loads, (f.read_text() for f in files)) if s["key"]["key"] == {"op": "conv"})
    assert stored["key"]["cpu_model"] and stored["key"]["fastconv"] == fastconv.__version__
    assert "isa" in stored["key"] and stored["key"]["key"] == {"op": "conv"}
    with pytest.raises(ValueError, match="namespace"):
        cache.put("../escape", 1, 2)
    with pytest.raises(TypeError, match="JSON value"):
        cache.put("tuning", 1, object())


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    """A write that fails before the rename leaves the previous entry whole and no temporary file."""
    cache.put("tuning", "k", {"v": 1})
    folder = tmp_path / "cache" / "tuning"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.warns(RuntimeWarning, match="could not write"):
        cache.put("tuning", "k", {"v": 2})
    monkeypatch.undo()
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.get("tuning", "k") == {"v": 1}
    assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp")] == []
    cache.put("tuning", "k", {"v": 3})
    assert cache.get("tuning", "k") == {"v": 3} and len(list(folder.iterdir())) == 1


@pytest.mark.parametrize("garbage", ['{"key": ', "[1, 2, 3]", "\xff\xfe not utf-8"])
def test_a_corrupt_cache_file_is_ignored_with_a_warning(tmp_path, garbage):
    cache.put("tuning", "k", 42)
    (entry,) = (tmp_path / "cache" / "tuning").iterdir()
    entry.write_bytes(garbage.encode("latin-1"))
    with pytest.warns(RuntimeWarning, match="fastconv cache: ignoring") as record:
        assert cache.get("tuning", "k") is None
    assert str(entry) in str(record[0].message)
    cache.put("tuning", "k", 43)  # the next write repairs it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get("tuning", "k") == 43


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    cache.put("tuning", "k", 1)
    monkeypatch.setenv("FASTCONV_NO_CACHE", "1")
    assert not cache.enabled()
    assert cache.get("tuning", "k") is None
    cache.put("tuning", "other", 2)
    monkeypatch.setenv("FASTCONV_NO_CACHE", "0")
    assert cache.get("tuning", "k") == 1 and cache.get("tuning", "other") is None


def test_cache_directory_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCONV_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.directory() == tmp_path / "home" / ".cache" / "fastconv"


@pytest.mark.parametrize("command", ["bench", "compare"])
def test_command_help(command, capsys):
    from fastconv.__main__ import main

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_cuda_timing_uses_events_and_synchronises(monkeypatch):
    """The CUDA path, run against a stand-in for CuPy (no GPU is needed to check the protocol)."""
    import sys
    import types

    log = []

    class Event:
        def record(self):
            log.append("record")

        def synchronize(self):
            log.append("event sync")

    class Device:
        def synchronize(self):
            log.append("device sync")

    cuda = types.SimpleNamespace(Event=Event, Device=Device, get_elapsed_time=lambda start, end: 10.0)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    seconds = timing.seconds_per_call(lambda: log.append("call"), 4, device="cuda")
    assert seconds == pytest.approx(10.0 / 1e3 / 4)
    assert log == ["device sync", "record", "call", "call", "call", "call", "record", "event sync"]


def test_plot_without_matplotlib_fails_before_the_run(monkeypatch, capsys):
    from fastconv.bench import plot

    monkeypatch.setattr(plot, "unavailable_reason", lambda: "--plot needs matplotlib")
    assert cli.run(bench_args(plot="out.png")) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="steady_heap needs glibc's mallopt")
def test_steady_heap_sets_glibc_thresholds():
    """mallopt accepted both thresholds (it returns 0 for a value out of range)."""
    assert timing.steady_heap() == "glibc mmap threshold 256 MiB, trim threshold 1024 MiB"

