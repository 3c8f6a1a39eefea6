"""python -m fastconv train {mnist,denoise,deconv,inpaint,dcgan}: train a seed network on MNIST.

Each network is a Task: its data, model and optimiser, one training `step` on a batch of
indices, `evaluate` (test metrics and pictures) and a checkpoint. `run` owns the epochs, the
progress bar and the throughput clock, which counts training steps only: the first
WARMUP_STEPS steps (allocation, first touch of memory) and all evaluation are outside it.
"""
from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

import fastconv

from .. import data, models, nn, optim
from ..dispatch import select
from ..autograd import Tensor, functional as F, no_grad
from . import _pictures as pictures

DEFAULT_EPOCHS = {"mnist": 5, "denoise": 1, "deconv": 1, "inpaint": 1, "dcgan": 5}
# inpaint: one epoch is a budget of images, and filling holes gains more from more, smaller
# steps (masked PSNR at equal images, batch 16 vs 64: +1.2 dB; one epoch at 8 vs 16: +0.16 dB)
DEFAULT_BATCH = {"mnist": 64, "denoise": 64, "deconv": 64, "inpaint": 8, "dcgan": 64}
# The learning rate over the run: "constant", or "linear" from the base rate down to zero at the
# last step, so the final weights come from small steps. Measured at seed 0, one epoch:
# mnist (with lr 2e-3) 98.80 % test accuracy against 98.41 % constant at 1e-3; inpaint masked
# PSNR +6.13 dB against +5.99 dB.
DEFAULT_LR_SCHEDULE = {"mnist": "linear", "denoise": "constant", "deconv": "constant", "inpaint": "linear",
                       "dcgan": "constant"}
WARMUP_STEPS = 10
NOISE_SIGMA = 0.5  # denoise: x + N(0, 0.5^2), clipped to [0, 1] (the Keras denoising-autoencoder setting)
EVAL_BATCH = 500


def add_arguments(p):
    p.add_argument("net", choices=models.NAMES, help="which network")
    p.add_argument("--epochs", type=int, help="passes over the training set (default 5 for mnist and dcgan, else 1)")
    p.add_argument("--batch", type=int, help="batch size (default 64; 8 for inpaint)")
    p.add_argument("--lr", type=float, help="learning rate (default: Adam 1e-3; 2e-3 for mnist, 2e-4 for dcgan)")
    p.add_argument("--lr-schedule", choices=("constant", "linear"),
                   help="learning rate over the run: constant, or linear decay to zero (default: linear for mnist)")
    p.add_argument("--backend", help="fastconv backend (default: automatic, cpp for numpy arrays)")
    p.add_argument("--threads", type=int, help="CPU threads for fastconv (and PyTorch with --compare-torch)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, batch order and corruptions")
    p.add_argument("--json", metavar="PATH", help="write a summary of the run here")
    p.add_argument("--out-dir", metavar="DIR", help="checkpoint and PNG pictures (default runs/NET)")
    p.add_argument("--data", metavar="DIR", help="folder with the MNIST IDX .gz files (searched first)")
    p.add_argument("--download", action="store_true",
                   help=f"download MNIST (checked by SHA-256) into {data.CACHE_DIR} if it is not found")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training and test images")
    p.add_argument("--compare-torch", type=int, nargs="?", const=400, metavar="STEPS",
                   help="mnist: also time PyTorch training the same network, interleaved with fastconv "
                        "(STEPS each, default 400)")
    p.add_argument("--classifier", metavar="NPZ", help="dcgan: MNIST classifier checkpoint to score samples "
                                                       "(default OUT_DIR/../mnist/mnist.npz)")


# --------------------------------------------------------------------------- device

class Device:
    """Where arrays live: numpy for the CPU backends, cupy for the cupy backend."""

    def __init__(self, backend):
        if backend == "cupy":
            import cupy

            self.xp = cupy
        else:
            self.xp = np

    def put(self, a):
        return a if self.xp is np else self.xp.asarray(a)

    def get(self, a):
        a = a.data if isinstance(a, Tensor) else a
        return a if isinstance(a, np.ndarray) else a.get()


def _predict(model, x, dev, batch=EVAL_BATCH):
    """Model outputs for numpy inputs x in evaluation mode, as one numpy array."""
    model.eval()
    with no_grad():
        out = np.concatenate([dev.get(model(Tensor(dev.put(x[i:i + batch])))) for i in range(0, len(x), batch)])
    model.train()
    return out


def _sigmoid(logits):
    return 0.5 + 0.5 * np.tanh(0.5 * logits)


# --------------------------------------------------------------------------- the five tasks

class Task:
    name = ""
    lr = 1e-3

    def __init__(self, args, dev, rng, train, test):
        self.args, self.dev, self.rng = args, dev, rng
        self.n_train = len(train[0])

    def step(self, idx) -> dict:
        raise NotImplementedError

    def optimizers(self):
        return [v for v in vars(self).values() if isinstance(v, optim.Optimizer)]

    def end_epoch(self, epoch, out_dir):
        pass

    def evaluate(self, out_dir) -> dict:
        raise NotImplementedError

    def save(self, out_dir):
        self.model.save(out_dir / f"{self.name}.npz")

    def _fit(self, x, target, loss_fn=F.mse):
        """One optimiser step of loss_fn(model(x), target)."""
        loss = loss_fn(self.model(Tensor(self.dev.put(x))), self.dev.put(target))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.data)}


class Classifier(Task):
    name = "mnist"
    # With the linear decay to zero (DEFAULT_LR_SCHEDULE), 2e-3: one epoch at seed 0 reached
    # 98.80 % test accuracy (1e-3: 98.32 %; 1e-3 without the decay: 98.41 %).
    lr = 2e-3

    def __init__(self, args, dev, rng, train, test):
        super().__init__(args, dev, rng, train, test)
        self.x, self.y = data.to_float(train[0]), train[1].astype(np.int64)
        self.x_test, self.y_test = data.to_float(test[0]), test[1].astype(np.int64)
        self.model = models.mnist_cnn().to(dev.xp)
        self.opt = optim.Adam(self.model.parameters(), lr=args.lr or self.lr, eps=1e-7)  # Keras' epsilon

    def step(self, idx):
        loss = F.cross_entropy(self.model(Tensor(self.dev.put(self.x[idx]))), self.dev.put(self.y[idx]))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.data)}

    def evaluate(self, out_dir):
        predicted = _predict(self.model, self.x_test, self.dev).argmax(axis=1)
        accuracy = float((predicted == self.y_test).mean())
        confusion = np.zeros((10, 10), np.int64)
        np.add.at(confusion, (self.y_test, predicted), 1)
        pictures.save_confusion(out_dir / "confusion.png", confusion,
                                f"MNIST test: {accuracy:.2%} correct of {len(self.y_test)}")
        wrong = np.flatnonzero(predicted != self.y_test)[:40]
        if len(wrong):
            pictures.save_examples(out_dir / "misclassified.png", self.x_test[wrong],
                                   [f"{t} → {p}" for t, p in zip(self.y_test[wrong], predicted[wrong])],
                                   title="misclassified test digits (true → predicted)")
        return {"test_accuracy": accuracy, "test_errors": int((predicted != self.y_test).sum())}


class Denoiser(Task):
    name = "denoise"

    def __init__(self, args, dev, rng, train, test):
        super().__init__(args, dev, rng, train, test)
        self.clean = data.pad_to_32(data.to_float(train[0]))
        self.clean_test = data.pad_to_32(data.to_float(test[0]))
        # fixed test noise: the metric must not change from run to run
        self.noisy_test = data.gaussian_noise(self.clean_test, NOISE_SIGMA, np.random.default_rng(12345))
        self.model = models.denoise_net().to(dev.xp)
        self.opt = optim.Adam(self.model.parameters(), lr=args.lr or self.lr)

    def step(self, idx):
        clean = self.clean[idx]
        return self._fit(data.gaussian_noise(clean, NOISE_SIGMA, self.rng), clean, F.bce_with_logits)

    def evaluate(self, out_dir):
        restored = _sigmoid(_predict(self.model, self.noisy_test, self.dev))
        pictures.save_rows(out_dir / "denoise.png", [("noisy", self.noisy_test[:16]), ("restored", restored[:16]),
                                                     ("clean", self.clean_test[:16])],
                           title=f"denoising, Gaussian noise σ={NOISE_SIGMA} (test set)")
        return {"psnr_noisy": data.psnr(self.noisy_test, self.clean_test),
                "psnr_denoised": data.psnr(restored, self.clean_test), "noise_sigma": NOISE_SIGMA}


class Reconstructor(Task):
    name = "deconv"

    def __init__(self, args, dev, rng, train, test):
        super().__init__(args, dev, rng, train, test)
        self.x, self.x_test = data.to_float(train[0]), data.to_float(test[0])
        self.mean_image = self.x.mean(axis=0, keepdims=True)
        self.model = models.deconv_net().to(dev.xp)
        self.opt = optim.Adam(self.model.parameters(), lr=args.lr or self.lr)

    def step(self, idx):
        x = self.x[idx]
        return self._fit(x, x)

    def evaluate(self, out_dir):
        out = _predict(self.model, self.x_test, self.dev)
        pictures.save_rows(out_dir / "deconv.png", [("input", self.x_test[:16]), ("output", out[:16])],
                           title="transposed-conv reconstruction (test set)")
        return {"test_mse": float(np.mean((out - self.x_test) ** 2, dtype=np.float64)),
                "baseline_mse": float(np.mean((self.mean_image - self.x_test) ** 2, dtype=np.float64))}


class Inpainter(Task):
    name = "inpaint"

    def __init__(self, args, dev, rng, train, test):
        super().__init__(args, dev, rng, train, test)
        self.clean = data.pad_to_32(data.to_float(train[0]))
        self.clean_test = data.pad_to_32(data.to_float(test[0]))
        self.mask_test = self._masks(len(self.clean_test), np.random.default_rng(12345))
        self.model = models.inpaint_net().to(dev.xp)
        self.opt = optim.Adam(self.model.parameters(), lr=args.lr or self.lr)

    @staticmethod
    def _masks(n, rng):
        # Boxes of 8..14 pixels inside the original 28x28 area, where the strokes are.
        return data.pad_to_32(data.random_boxes(n, 28, rng, box_min=8, box_max=14))

    @staticmethod
    def _inputs(clean, mask):
        return np.concatenate([clean * (1 - mask), mask], axis=1)

    def step(self, idx):
        clean = self.clean[idx]
        return self._fit(self._inputs(clean, self._masks(len(idx), self.rng)), clean, F.bce_with_logits)

    def evaluate(self, out_dir):
        inputs = self._inputs(self.clean_test, self.mask_test)
        out = _sigmoid(_predict(self.model, inputs, self.dev))
        filled = inputs[:, :1] + out * self.mask_test  # known pixels kept, holes from the network
        shown = inputs[:16, :1] + self.mask_test[:16] * 0.35  # holes shown grey
        pictures.save_rows(out_dir / "inpaint.png", [("masked", shown), ("filled", filled[:16]),
                                                     ("clean", self.clean_test[:16])],
                           title="inpainting 8-14 px boxes (test set)")
        return {"psnr_masked_before": data.psnr(inputs[:, :1], self.clean_test, self.mask_test),
                "psnr_masked_after": data.psnr(out, self.clean_test, self.mask_test)}


class GAN(Task):
    name = "dcgan"
    lr = 2e-4  # the DCGAN paper's Adam settings: lr 2e-4, beta1 0.5

    def __init__(self, args, dev, rng, train, test):
        super().__init__(args, dev, rng, train, test)
        self.x = data.to_float(train[0]) * 2 - 1  # tanh range
        self.model = models.DCGAN().to(dev.xp)
        self.G, self.D = self.model.generator, self.model.discriminator
        lr = args.lr or self.lr
        self.opt_g = optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))
        self.fixed_z = np.random.default_rng(999).standard_normal((64, models.LATENT), dtype=np.float32)
        self.out_dir = None

    def _z(self, n):
        return Tensor(self.dev.put(self.rng.standard_normal((n, models.LATENT), dtype=np.float32)))

    def step(self, idx):
        n, xp = len(idx), self.dev.xp
        ones, zeros = xp.ones((n, 1), np.float32), xp.zeros((n, 1), np.float32)
        fake = self.G(self._z(n))
        # discriminator: real -> 1, fake -> 0 (the generator's graph is cut by detach)
        d_loss = (F.bce_with_logits(self.D(Tensor(self.dev.put(self.x[idx]))), ones)
                  + F.bce_with_logits(self.D(fake.detach()), zeros))
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        # generator: make the updated discriminator say 1; D's own gradients are not needed
        self.D.requires_grad_(False)
        g_loss = F.bce_with_logits(self.D(fake), ones)
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        return {"d_loss": float(d_loss.data), "g_loss": float(g_loss.data)}

    def samples(self, z):
        return (_predict(self.G, z, self.dev) + 1) / 2

    def end_epoch(self, epoch, out_dir):
        pictures.save_grid(out_dir / f"samples_epoch{epoch}.png", self.samples(self.fixed_z), cols=8,
                           title=f"DCGAN samples after epoch {epoch}")

    def evaluate(self, out_dir):
        classifier_path = Path(self.args.classifier) if self.args.classifier else out_dir.parent / "mnist" / "mnist.npz"
        if not classifier_path.is_file():
            return {"sample_score": None, "sample_score_note": f"no classifier checkpoint at {classifier_path}"}
        classifier = models.mnist_cnn().load(classifier_path).to(self.dev.xp)
        z = np.random.default_rng(4321).standard_normal((1000, models.LATENT), dtype=np.float32)
        logits = _predict(classifier, self.samples(z), self.dev).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        marginal = probs.mean(axis=0)
        # Inception score with the MNIST classifier: exp E[KL(p(y|x) || p(y))], 1..10 (10: confident and diverse)
        kl = (probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        return {"sample_score": float(np.exp(kl.mean())), "sample_confidence": float(probs.max(axis=1).mean()),
                "sample_class_counts": np.bincount(probs.argmax(axis=1), minlength=10).tolist(),
                "classifier": str(classifier_path)}


TASKS = {t.name: t for t in (Classifier, Denoiser, Reconstructor, Inpainter, GAN)}


# --------------------------------------------------------------------------- PyTorch, timed alongside

def compare_with_torch(args, dev, train, test, steps, threads):
    """Train fresh copies of the MNIST CNN in fastconv and in PyTorch on the same batches, in
    rotating blocks so that every contender sees the same machine load; returns the throughputs.

    PyTorch runs the network twice: with our layer order (MaxPool before ReLU, see models.py),
    the like-for-like comparison, and in the order DESIGN lists (Conv ReLU MaxPool), as a
    PyTorch user would write it."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    nn.init.manual_seed(args.seed)
    ours = Classifier(args, dev, np.random.default_rng(args.seed), train, test)
    x, y = torch.from_numpy(ours.x), torch.from_numpy(ours.y)

    def torch_runner(net):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

        def step(idx):
            idx = torch.from_numpy(idx)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    runners = {"fastconv": ours.step, "torch": torch_runner(models.torch_mnist_cnn()),
               "torch_relu_first": torch_runner(models.torch_mnist_cnn(relu_first=True))}
    batch, block = args.batch, 25
    order = np.random.default_rng(args.seed).integers(0, len(ours.x), (steps + WARMUP_STEPS, batch))
    for idx in order[:WARMUP_STEPS]:
        for run_step in runners.values():
            run_step(idx)
    names, seconds = list(runners), dict.fromkeys(runners, 0.0)
    timed = order[WARMUP_STEPS:]
    for i, start in enumerate(range(0, steps, block)):
        for name in names[i % 3:] + names[:i % 3]:  # rotate who goes first
            t0 = time.perf_counter()
            for idx in timed[start:start + block]:
                runners[name](idx)
            seconds[name] += time.perf_counter() - t0
    rate = {name: steps * batch / seconds[name] for name in names}
    return {"steps": steps, "batch": batch, "threads": threads, "torch_version": torch.__version__,
            "fastconv_images_per_second": rate["fastconv"], "torch_images_per_second": rate["torch"],
            "speedup": rate["fastconv"] / rate["torch"],
            "torch_relu_first_images_per_second": rate["torch_relu_first"],
            "speedup_vs_torch_relu_first": rate["fastconv"] / rate["torch_relu_first"]}


# --------------------------------------------------------------------------- the command

def single_threaded_blas() -> bool:
    """Put numpy's OpenBLAS on one thread (what threadpoolctl does, for the one library numpy
    wheels bundle). The dense layers' matrices are small (64 x 576 x 64), and OpenBLAS's own
    worker threads, spinning beside fastconv's OpenMP team, slowed whole MNIST steps about
    2.8x on this 2-core machine. Linux only; returns False where nothing was found."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return False
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, symbol, None)
            if setter is not None:
                setter(1)
                return True
    return False


def _load(args):
    try:
        return data.load_mnist("train", args.data), data.load_mnist("test", args.data)
    except data.DataNotFound:
        if not args.download:
            raise
    print(f"downloading MNIST to {data.CACHE_DIR} ...", file=sys.stderr)
    data.download_mnist()
    return data.load_mnist("train", args.data), data.load_mnist("test", args.data)


def lr_factor(schedule, step, total_steps):
    """The learning rate's factor at `step` (0-based) of a run of total_steps."""
    if schedule == "linear":
        return 1.0 - step / total_steps
    return 1.0


def _epoch(task, epoch, epochs, batch, rng, clock, schedule):
    """One pass over the training set; returns the mean of each reported loss. schedule(step)
    gives the learning rate's factor at a step of the whole run."""
    from tqdm import tqdm

    n = task.n_train
    order = rng.permutation(n)
    totals, steps = {}, 0
    bar = tqdm(total=n, desc=f"{task.name} epoch {epoch}/{epochs}", unit="img", mininterval=0.5, leave=True,
               dynamic_ncols=True)
    start = time.perf_counter()
    timed_from = start if clock["steps"] >= clock["warmup"] else None
    for step, first in enumerate(range(0, n, batch)):
        if clock["steps"] == clock["warmup"]:
            timed_from = time.perf_counter()
        for opt, base in clock["base_lr"]:
            opt.lr = base * schedule(clock["steps"])
        losses = task.step(order[first:first + batch])
        clock["steps"] += 1
        if timed_from is not None:
            clock["images"] += min(batch, n - first)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + v
        steps += 1
        bar.update(min(batch, n - first))
        if step % 20 == 0:
            rate = (first + batch) / (time.perf_counter() - start)
            bar.set_postfix({**{k: f"{v:.4f}" for k, v in losses.items()}, "img/s": f"{rate:.0f}"}, refresh=False)
    if timed_from is not None:
        clock["seconds"] += time.perf_counter() - timed_from
    bar.close()
    return {k: v / max(steps, 1) for k, v in totals.items()}


def run(args) -> int:
    name = args.net
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[name]
    if args.batch is None:
        args.batch = DEFAULT_BATCH[name]
    if epochs < 1 or args.batch < 1 or (args.limit is not None and args.limit < 1):
        raise SystemExit("train: --epochs, --batch and --limit must be positive")
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    single_threaded_blas()
    if args.backend is not None:
        fastconv.use_backend(args.backend)  # raises, saying why, if it is not available here
    backend = args.backend or select(None, np).__name__.rsplit(".", 1)[-1]
    out_dir = Path(args.out_dir or Path("runs") / name)
    out_dir.mkdir(parents=True, exist_ok=True)

    try:
        train, test = _load(args)
    except (data.DataNotFound, ValueError, OSError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    if args.limit:
        train, test = (a[:args.limit] for a in train), (a[:args.limit] for a in test)
        train, test = tuple(train), tuple(test)

    dev = Device(backend)
    nn.init.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    task = TASKS[name](args, dev, rng, train, test)
    # short runs (--limit) still get a clock: at most half of the steps are warm-up
    warmup = min(WARMUP_STEPS, epochs * -(-task.n_train // args.batch) // 2)
    clock = {"steps": 0, "images": 0, "seconds": 0.0, "warmup": warmup,
             "base_lr": [(opt, opt.lr) for opt in task.optimizers()]}
    lr_schedule = args.lr_schedule or DEFAULT_LR_SCHEDULE[name]
    total_steps = epochs * -(-task.n_train // args.batch)
    def schedule(step):
        return lr_factor(lr_schedule, step, total_steps)

    history = []
    for epoch in range(1, epochs + 1):
        history.append(_epoch(task, epoch, epochs, args.batch, rng, clock, schedule))
        task.end_epoch(epoch, out_dir)
    images_per_second = clock["images"] / clock["seconds"] if clock["seconds"] > 0 else None
    task.save(out_dir)
    metrics = task.evaluate(out_dir)

    summary = {"net": name, "epochs": epochs, "batch": args.batch, "backend": backend,
               "threads": fastconv.get_num_threads(), "seed": args.seed, "lr_schedule": lr_schedule, "train_images": task.n_train,
               "test_images": len(test[0]), "images_per_second": images_per_second,
               "timed_steps": clock["steps"] - warmup, "train_seconds": clock["seconds"],
               **history[-1], "epoch_losses": history, **metrics, "checkpoint": str(out_dir / f"{name}.npz"),
               "pictures": sorted(str(p) for p in out_dir.glob("*.png")), "fastconv_version": fastconv.__version__}
    if args.compare_torch:
        if name != "mnist":
            print("train: --compare-torch applies to mnist only; skipped", file=sys.stderr)
        else:
            summary["torch_comparison"] = compare_with_torch(args, dev, train, test, args.compare_torch,
                                                             fastconv.get_num_threads())
    print(json.dumps({k: v for k, v in summary.items() if k not in ("epoch_losses", "pictures")}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0
