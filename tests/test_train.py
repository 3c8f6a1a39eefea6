"""Smoke runs of `python -m fastconv train NET` on a few batches: every net trains, writes its
checkpoint, its pictures and a --json summary with the fields the issue asks for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv import models
from fastconv.__main__ import main
from fastconv.autograd import Tensor

MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"
pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="data/mnist not in this checkout")

FIELDS = {
    "mnist": ["test_accuracy"],
    "denoise": ["psnr_noisy", "psnr_denoised"],
    "deconv": ["test_mse", "baseline_mse"],
    "inpaint": ["psnr_masked_before", "psnr_masked_after"],
    "dcgan": ["d_loss", "g_loss", "sample_score"],
}
PICTURES = {
    "mnist": {"confusion.png", "misclassified.png"},
    "denoise": {"denoise.png"},
    "deconv": {"deconv.png"},
    "inpaint": {"inpaint.png"},
    "dcgan": {"samples_epoch1.png", "samples_epoch2.png"},
}


def train(tmp_path, net, *extra):
    out, summary = tmp_path / net, tmp_path / f"{net}.json"
    argv = ["train", net, "--limit", "96", "--batch", "32", "--epochs", "2" if net == "dcgan" else "1",
            "--data", str(MNIST), "--out-dir", str(out), "--json", str(summary), "--threads", "2", *extra]
    assert main(argv) == 0
    return out, json.loads(summary.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every net once, mnist first so that dcgan finds its classifier beside it."""
    root = tmp_path_factory.mktemp("runs")
    return root, {net: train(root, net) for net in models.NAMES}


@pytest.mark.parametrize("net", models.NAMES)
def test_each_net_trains_from_the_cli(runs, net):
    root, results = runs
    out, summary = results[net]
    assert summary["net"] == net and summary["backend"] == "cpp" and summary["threads"] == 2
    assert summary["train_images"] == 96 and summary["test_images"] == 96
    assert summary["images_per_second"] > 0
    for field in FIELDS[net]:
        assert np.isfinite(summary[field]), field
    assert PICTURES[net] <= {p.name for p in out.glob("*.png")}
    assert (out / f"{net}.npz").is_file()


def test_checkpoint_loads_into_the_model(runs):
    _, results = runs
    out, _ = results["mnist"]
    model = models.mnist_cnn().load(out / "mnist.npz")
    assert model(Tensor(np.zeros((1, 1, 28, 28), np.float32))).shape == (1, 10)


def test_dcgan_scores_samples_with_the_mnist_classifier(runs):
    _, results = runs
    summary = results["dcgan"][1]
    assert 1.0 <= summary["sample_score"] <= 10.0
    assert sum(summary["sample_class_counts"]) == 1000
    assert len(summary["epoch_losses"]) == 2 and {"d_loss", "g_loss"} <= set(summary["epoch_losses"][0])


def test_seed_makes_runs_repeatable(tmp_path):
    a = train(tmp_path / "a", "deconv", "--seed", "5")[1]
    b = train(tmp_path / "b", "deconv", "--seed", "5")[1]
    assert a["test_mse"] == b["test_mse"] and a["epoch_losses"] == b["epoch_losses"]


def test_reference_backend(tmp_path):
    out, summary = train(tmp_path, "mnist", "--backend", "reference", "--limit", "32")
    assert summary["backend"] == "reference"


def test_compare_torch(tmp_path):
    _, summary = train(tmp_path, "mnist", "--compare-torch", "20")
    cmp = summary["torch_comparison"]
    assert cmp["steps"] == 20 and cmp["threads"] == 2
    assert cmp["torch_images_per_second"] > 0 and cmp["fastconv_images_per_second"] > 0
    assert cmp["speedup"] == pytest.approx(cmp["fastconv_images_per_second"] / cmp["torch_images_per_second"])
    assert cmp["torch_relu_first_images_per_second"] > 0


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setattr("fastconv.data.CACHE_DIR", tmp_path / "cache")
    assert main(["train", "mnist", "--data", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Looked in" in err and str(tmp_path / "nowhere") in err and "--download" in err


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        main(["train", "mnist", "--backend", "nope", "--data", str(MNIST), "--out-dir", str(tmp_path)])


def test_module_entry_point(tmp_path):
    """The real `python -m fastconv train` in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "fastconv", "train", "deconv", "--limit", "64", "--data", str(MNIST),
                           "--out-dir", str(tmp_path), "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "deconv epoch 1/1" in proc.stderr  # the tqdm bar
    assert json.loads((tmp_path / "s.json").read_text())["net"] == "deconv"


def test_learning_rate_schedules():
    from fastconv.commands.train import DEFAULT_LR_SCHEDULE, lr_factor

    assert [lr_factor("linear", s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [lr_factor("constant", s, 4) for s in range(4)] == [1.0] * 4
    assert DEFAULT_LR_SCHEDULE["mnist"] == "linear" and set(DEFAULT_LR_SCHEDULE) == set(models.NAMES)


def test_lr_schedule_is_reported_and_can_be_chosen(runs, tmp_path):
    _, results = runs
    assert results["mnist"][1]["lr_schedule"] == "linear" and results["denoise"][1]["lr_schedule"] == "constant"
    _, summary = train(tmp_path, "mnist", "--lr-schedule", "constant")
    assert summary["lr_schedule"] == "constant"
