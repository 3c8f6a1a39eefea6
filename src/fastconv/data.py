"""MNIST: find the IDX files, check their SHA-256, read them; download only when asked; and the
corruptions the restoration networks learn to undo.

Search order (DESIGN §Data): --data DIR, $FASTCONV_DATA, ./data/mnist, ~/.cache/fastconv/mnist.
Each place may hold the four files itself or in an `mnist/` folder. Nothing is downloaded unless
`download_mnist` is called (`python -m fastconv train ... --download`).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

# file -> SHA-256 of the original gzip release (as in data/mnist/SHA256SUMS)
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Tried in order; the SHA-256 above decides whether a copy is good, wherever it came from.
MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
    "http://yann.lecun.com/exdb/mnist/",  # the original
)
CACHE_DIR = Path("~/.cache/fastconv/mnist")
SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class DataNotFound(FileNotFoundError):
    pass


def search_path(data_dir=None) -> list[Path]:
    """The folders looked in, in order."""
    places = []
    if data_dir:
        places.append(Path(data_dir))
    if os.environ.get("FASTCONV_DATA"):
        places.append(Path(os.environ["FASTCONV_DATA"]))
    places += [Path("data/mnist"), CACHE_DIR.expanduser()]
    return places


def find_mnist(data_dir=None, checksums=MNIST_SHA256) -> Path:
    """The first folder on the search path holding every file, checked; else DataNotFound."""
    looked = []
    for place in search_path(data_dir):
        for folder in (place, place / "mnist"):
            looked.append(folder)
            if all((folder / name).is_file() for name in checksums):
                for name, digest in checksums.items():
                    verify(folder / name, digest)
                return folder
    names = ", ".join(checksums)
    where = "\n".join(f"  {p.resolve() if not p.is_absolute() else p}" for p in looked)
    raise DataNotFound(
        f"MNIST not found: no folder holds all of {names}. Looked in:\n{where}\n"
        f"Point --data DIR or $FASTCONV_DATA at a folder with them, or fetch them (about 11 MB) with "
        f"`python -m fastconv train mnist --download`, which saves them to {CACHE_DIR}.")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path, digest):
    actual = sha256(path)
    if actual != digest:
        raise ValueError(f"{path}: SHA-256 is {actual}, expected {digest}; the file is damaged or not the "
                         f"original MNIST release: delete it and copy or download it again")


def read_idx(path) -> np.ndarray:
    """An IDX file (gzip or not) as a uint8 array of the shape its header gives."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {data.size} values")
    return data.reshape(shape)


def load_mnist(split="train", data_dir=None, checksums=MNIST_SHA256):
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of 'train' or 'test'."""
    folder = find_mnist(data_dir, checksums)
    images_file, labels_file = SPLITS[split]
    images, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return images, labels


def download_mnist(dest=None, urls=MNIST_URLS, checksums=MNIST_SHA256, timeout=60) -> Path:
    """Fetch every missing or damaged file into `dest` (default ~/.cache/fastconv/mnist), trying
    each base URL in turn; a file is kept only when its SHA-256 matches."""
    dest = Path(dest).expanduser() if dest else CACHE_DIR.expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in checksums.items():
        target = dest / name
        if target.is_file() and sha256(target) == digest:
            continue
        errors = []
        for base in urls:
            url = base.rstrip("/") + "/" + name
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=name + ".")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out)
                verify(tmp, digest)
                os.replace(tmp, target)  # atomic: a partial download never takes the real name
                break
            except (OSError, ValueError) as e:
                errors.append(f"{url}: {e}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise OSError(f"could not download {name}:\n  " + "\n  ".join(errors))
    return dest


# --------------------------------------------------------------------------- arrays and corruptions

def to_float(images, dtype=np.float32) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(dtype) / 255).reshape(len(images), 1, *images.shape[1:])


def pad_to_32(x) -> np.ndarray:
    """(N, C, 28, 28) -> (N, C, 32, 32), two zero pixels on every side."""
    return np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))


def gaussian_noise(x, sigma, rng, clip=True) -> np.ndarray:
    """x + N(0, sigma^2), clipped to [0, 1] unless clip=False."""
    noisy = x + rng.standard_normal(x.shape, dtype=x.dtype) * x.dtype.type(sigma)
    return np.clip(noisy, 0, 1, out=noisy) if clip else noisy


def random_boxes(n, size, rng, box_min=8, box_max=14, count=1, dtype=np.float32) -> np.ndarray:
    """Masks (n, 1, size, size), 1 inside `count` random axis-aligned boxes of side box_min..box_max
    per image (boxes may overlap), 0 elsewhere."""
    pos = np.arange(size)
    mask = np.zeros((n, size, size), bool)
    for _ in range(count):
        h, w = rng.integers(box_min, box_max + 1, (2, n, 1))
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        rows = (pos >= top) & (pos < top + h)           # (n, size)
        cols = (pos >= left) & (pos < left + w)
        mask |= rows[:, :, None] & cols[:, None, :]
    return mask.astype(dtype)[:, None]


def random_pixels(n, size, rng, p=0.5, dtype=np.float32) -> np.ndarray:
    """Masks (n, 1, size, size) with each pixel missing (1) with probability p."""
    return (rng.random((n, 1, size, size)) < p).astype(dtype)


def psnr(a, b, mask=None, peak=1.0) -> float:
    """Peak signal-to-noise ratio in dB of a against b (over the pixels where mask is set)."""
    err = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    mse = err[mask.astype(bool)].mean() if mask is not None else err.mean()
    return float(10 * np.log10(peak ** 2 / mse)) if mse > 0 else float("inf")
