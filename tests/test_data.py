"""MNIST loading: IDX reading, search order, SHA-256 checks, the download path (against a local
http.server on 127.0.0.1; no test needs the network) and the corruption transforms."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from fastconv import data

REPO_MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"


def write_idx(path, array):
    """A uint8 IDX file (gzip when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    # mtime 0: gzip otherwise stamps the current second into the header, and two writes of the same
    # data on either side of a second differ (test_download_skips_good_files failed in CI so)
    opener = (lambda p, mode: gzip.GzipFile(p, mode, mtime=0)) if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def fake_mnist(folder, n_train=12, n_test=5, seed=0):
    """Small IDX files under MNIST's names in `folder`; returns their SHA-256 map."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    for name, a in arrays.items():
        write_idx(folder / name, a)
    return {name: data.sha256(folder / name) for name in arrays}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $FASTCONV_DATA, an empty working directory and an empty cache."""
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache" / "fastconv" / "mnist")
    return tmp_path


# --------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("name", ["a-idx3-ubyte.gz", "a-idx3-ubyte"])
def test_read_idx_round_trip(tmp_path, name):
    a = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    write_idx(tmp_path / name, a)
    np.testing.assert_array_equal(data.read_idx(tmp_path / name), a)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="holds 2"):
        data.read_idx(tmp_path / "short")


@pytest.mark.skipif(not (REPO_MNIST / "SHA256SUMS").is_file(), reason="data/mnist not in this checkout")
def test_repository_copy_matches_its_sums_and_loads():
    sums = dict(reversed(line.split()) for line in (REPO_MNIST / "SHA256SUMS").read_text().splitlines())
    assert sums == data.MNIST_SHA256
    images, labels = data.load_mnist("test", REPO_MNIST)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --------------------------------------------------------------------------- search order and checks

def test_search_order(isolated, monkeypatch):
    sums = {}
    places = {"arg": isolated / "arg", "env": isolated / "env", "cwd": Path("data/mnist"), "cache": data.CACHE_DIR}
    for i, (label, folder) in enumerate(places.items()):
        sums[label] = fake_mnist(folder, n_train=10 + i)
    monkeypatch.setenv("FASTCONV_DATA", str(places["env"]))
    for i, label in enumerate(places):
        images, _ = data.load_mnist("train", places["arg"], checksums=sums[label])
        assert len(images) == 10 + i, label
        for f in Path(places[label]).iterdir():  # remove the winner: the next place takes over
            f.unlink()

def test_mnist_subfolder_is_found(isolated):
    sums = fake_mnist(isolated / "root" / "mnist")
    assert data.find_mnist(isolated / "root", sums) == isolated / "root" / "mnist"


def test_not_found_message_lists_every_place(isolated, monkeypatch):
    monkeypatch.setenv("FASTCONV_DATA", str(isolated / "env"))
    with pytest.raises(data.DataNotFound) as e:
        data.find_mnist(isolated / "arg")
    message = str(e.value)
    for place in (isolated / "arg", isolated / "env", Path("data/mnist").resolve(), data.CACHE_DIR):
        assert str(place) in message
    assert "--download" in message


def test_checksum_mismatch_is_an_error(isolated):
    sums = fake_mnist(isolated / "d")
    sums["t10k-labels-idx1-ubyte.gz"] = "0" * 64
    with pytest.raises(ValueError, match="t10k-labels.*SHA-256"):
        data.find_mnist(isolated / "d", sums)


# --------------------------------------------------------------------------- download

class _Server:
    """http.server on 127.0.0.1 serving a folder, in a thread."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_local_server(isolated):
    served = isolated / "served"
    sums = fake_mnist(served)
    dest = isolated / "dest"
    with _Server(served) as server:
        # the first mirror has nothing (404): the second one serves
        assert data.download_mnist(dest, urls=(server.url + "missing/", server.url), checksums=sums) == dest
    for name, digest in sums.items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest
    images, labels = data.load_mnist("train", dest, checksums=sums)
    assert images.shape == (12, 28, 28) and labels.shape == (12,)


def test_download_keeps_no_file_that_fails_its_checksum(isolated):
    served = isolated / "served"
    sums = fake_mnist(served)
    sums["train-images-idx3-ubyte.gz"] = "f" * 64
    dest = isolated / "dest"
    with _Server(served) as server, pytest.raises(OSError, match="train-images.*SHA-256"):
        data.download_mnist(dest, urls=(server.url,), checksums=sums)
    assert not any(p.name.startswith("train-images") for p in dest.iterdir())


def test_download_skips_good_files(isolated):
    served = isolated / "served"
    sums = fake_mnist(served)
    dest = isolated / "dest"
    fake_mnist(dest)  # same seed: the same bytes, already there
    # no server at all: nothing may be fetched
    data.download_mnist(dest, urls=("http://127.0.0.1:9/",), checksums=sums)


def test_download_defaults_to_the_cache(isolated):
    served = isolated / "served"
    sums = fake_mnist(served)
    with _Server(served) as server:
        data.download_mnist(urls=(server.url,), checksums=sums)
    assert data.find_mnist(None, sums) == data.CACHE_DIR


def test_loading_never_downloads(isolated, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the loader tried the network")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    with pytest.raises(data.DataNotFound):
        data.load_mnist("train")


def test_canonical_urls_and_sums():
    assert set(data.MNIST_SHA256) == {n for pair in data.SPLITS.values() for n in pair}
    assert all(u.endswith("/") for u in data.MNIST_URLS)
    assert "http://yann.lecun.com/exdb/mnist/" in data.MNIST_URLS


# --------------------------------------------------------------------------- corruptions

def test_to_float_and_pad():
    images = np.full((2, 28, 28), 255, np.uint8)
    x = data.to_float(images)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32 and x.max() == 1.0
    p = data.pad_to_32(x)
    assert p.shape == (2, 1, 32, 32)
    assert p[:, :, 2:30, 2:30].min() == 1.0 and p.sum() == x.sum()


def test_gaussian_noise():
    x = np.full((200, 1, 32, 32), 0.5, np.float32)
    noisy = data.gaussian_noise(x, 0.1, np.random.default_rng(0))
    assert noisy.dtype == np.float32
    assert abs((noisy - x).std() - 0.1) < 0.005 and abs((noisy - x).mean()) < 0.005
    clipped = data.gaussian_noise(x, 2.0, np.random.default_rng(0))
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    assert data.gaussian_noise(x, 2.0, np.random.default_rng(0), clip=False).max() > 1.0


def test_random_boxes():
    masks = data.random_boxes(500, 28, np.random.default_rng(0), box_min=8, box_max=14)
    assert masks.shape == (500, 1, 28, 28) and masks.dtype == np.float32
    rows, cols = masks[:, 0].any(axis=2).sum(axis=1), masks[:, 0].any(axis=1).sum(axis=1)
    assert rows.min() >= 8 and rows.max() <= 14 and cols.min() >= 8 and cols.max() <= 14
    assert (masks[:, 0].sum(axis=(1, 2)) == rows * cols).all()  # one solid rectangle each
    assert masks[:, 0, 0].any() and masks[:, 0, -1].any()  # boxes reach the edges too
    several = data.random_boxes(50, 28, np.random.default_rng(0), count=3)
    assert (several.sum(axis=(1, 2, 3)) >= 64).all()


def test_random_pixels():
    masks = data.random_pixels(100, 32, np.random.default_rng(0), p=0.25)
    assert abs(masks.mean() - 0.25) < 0.01


def test_psnr():
    a, b = np.zeros((2, 1, 4, 4)), np.full((2, 1, 4, 4), 0.1)
    assert data.psnr(a, b) == pytest.approx(20.0)
    mask = np.zeros_like(a)
    mask[0, 0, 0, 0] = 1
    b[0, 0, 0, 0] = 1.0
    assert data.psnr(a, b, mask) == pytest.approx(0.0)
    assert data.psnr(a, a) == float("inf")

