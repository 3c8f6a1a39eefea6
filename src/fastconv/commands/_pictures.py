"""PNG pictures of training results: labelled image grids and a confusion matrix (matplotlib, Agg)."""
from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(images, cols, pad=1, background=1.0) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> one 2-D mosaic with `cols` images a row."""
    images = np.asarray(images)[:, 0]
    n, h, w = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), background, images.dtype)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return out


def save_rows(path, rows, title=None, cols=None):
    """rows: [(label, images (N, 1, H, W) in [0, 1])]: one labelled strip per row, white ink on black."""
    plt = _pyplot()
    cols = cols or max(len(images) for _, images in rows)
    strips = [tile(images[:cols], cols, background=0.5) for _, images in rows]
    width = cols * 0.6  # inches of images a row
    aspect = strips[0].shape[0] / strips[0].shape[1]
    fig, axes = plt.subplots(len(rows), 1, figsize=(width + 1.5, len(rows) * (width * aspect + 0.15) + 0.5),
                             squeeze=False)
    for ax, (label, _), strip in zip(axes[:, 0], rows, strips):
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_grid(path, images, cols=8, title=None, scale=3):
    """An unlabelled mosaic of images in [0, 1], `cols` a row, each pixel `scale` pixels wide."""
    plt = _pyplot()
    mosaic = tile(images, cols, background=0.5)
    h, w = mosaic.shape
    fig, ax = plt.subplots(figsize=(w * scale / 100, h * scale / 100))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)


def save_confusion(path, matrix, title):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.4))
    shown = np.log1p(matrix)
    ax.imshow(shown, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if shown[i, j] > shown.max() * 0.6 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_examples(path, images, captions, cols=10, title=None):
    """Images with a caption each (e.g. misclassified digits with 'true -> predicted')."""
    plt = _pyplot()
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05 + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, images, captions):
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
