"""Cells from many per-well crop stores as a PyTorch dataset, with seeded augmentation.

A cell is addressed by ``(store number, row in that store)``; images are read lazily from
the memory-mapped ``images.npy`` of each store (:class:`gradcamo.store.CropStore`), opened
once per process, so DataLoader workers each map the files themselves and nothing large
is pickled to them.

Training draws are ``(epoch, draw, cell)`` triples (:class:`BalancedDraws`); the
augmentation of a draw depends only on ``(seed, epoch, draw)``, so results do not depend on
the number of workers or on which worker reads which cell.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from gradcamo.errors import InputError
from gradcamo.store import CropStore


@dataclass(frozen=True)
class Augmentation:
    """Augmentations that keep the biology of a crop (C, Z, Y, X).

    ``flip_z``: also flip along Z (off by default: the coverslip side of a cell differs).
    ``intensity_jitter``: per channel, multiply by a gain drawn from U(1-j, 1+j), as stain
    and illumination vary between sites. No additive shift: it moves the zero background
    and padding, and on intensities normalised to about [0, 1] an offset of up to ±0.1
    swamped intensity differences (mini dataset, held-out wells: test accuracy 0.38 with
    gain and offset jitter, 0.45 without jitter, 0.57 with gain jitter 0.1).
    X/Y flips and 90° rotations in the YX plane are always on; rotations by 90° only when
    Y == X (otherwise 180°).
    """

    flip_z: bool
    intensity_jitter: float


def augment(image: np.ndarray, rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray:
    """One random, biology-preserving transform of a ``(C, Z, Y, X)`` crop.

    Hand-written with NumPy rather than MONAI's random transforms: those keep one RandomState
    per transform object, whereas here every draw derives its own generator from
    (seed, epoch, draw) -- what makes augmentation independent of worker scheduling.
    """
    out = image
    if rng.random() < 0.5:
        out = out[:, :, :, ::-1]
    if rng.random() < 0.5:
        out = out[:, :, ::-1, :]
    if augmentation.flip_z and rng.random() < 0.5:
        out = out[:, ::-1, :, :]
    square = out.shape[-1] == out.shape[-2]
    quarter_turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    out = np.rot90(out, k=quarter_turns, axes=(2, 3))
    out = np.ascontiguousarray(out, dtype=np.float32)
    j = augmentation.intensity_jitter
    if j > 0:
        gain = rng.uniform(1 - j, 1 + j, size=(out.shape[0], 1, 1, 1)).astype(np.float32)
        out = out * gain  # not in place: ``out`` may still be the caller's array
    return out


def cell_table(wells: pd.DataFrame) -> tuple[list[Path], pd.DataFrame]:
    """List every cell of the given wells.

    Parameters
    ----------
    wells: one row per well with columns ``plate, well, treatment, split, store`` (the crop
        store folder).

    Returns
    -------
    ``(store folders, cells)``: cells has one row per cell with columns ``store`` (index
    into the folder list), ``row`` (cell number in that store), ``plate, well, treatment,
    split``; wells in the given order, cells in store order.
    """
    stores = [Path(p) for p in wells["store"]]
    blocks = []
    for number, (path, well) in enumerate(zip(stores, wells.itertuples(index=False))):
        n_cells = len(CropStore.open(path))
        blocks.append(
            pd.DataFrame(
                {
                    "store": np.full(n_cells, number, dtype=np.int64),
                    "row": np.arange(n_cells, dtype=np.int64),
                    "plate": well.plate,
                    "well": well.well,
                    "treatment": well.treatment,
                    "split": well.split,
                }
            )
        )
    columns = ["store", "row", "plate", "well", "treatment", "split"]
    cells = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(columns=columns)
    return stores, cells


class CropCells(Dataset):
    """Cells of several crop stores; item ``i`` is ``(image (C, Z, Y, X) float32, label)``.

    Parameters
    ----------
    stores: crop store folders.
    store_index, row: per cell, its store number and its row in that store (length N).
    labels: per cell, its class id (length N).
    augmentation, seed: used for training draws; an item key ``(epoch, draw, i)`` returns
        cell ``i`` augmented with a generator seeded by ``(seed, epoch, draw)``. A plain
        integer key returns the cell unchanged (evaluation).
    """

    def __init__(
        self,
        stores: Sequence[str | os.PathLike],
        store_index: Sequence[int],
        row: Sequence[int],
        labels: Sequence[int],
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        self.stores = [Path(p) for p in stores]
        self.store_index = np.asarray(store_index, dtype=np.int64)
        self.row = np.asarray(row, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if not (len(self.store_index) == len(self.row) == len(self.labels)):
            raise ValueError("store_index, row and labels must have the same length")
        self.augmentation = augmentation
        self.seed = int(seed)
        self._open: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, cells: Sequence[int]) -> "CropCells":
        """The same kind of dataset over the given cell numbers, in that order."""
        cells = np.asarray(cells, dtype=np.int64)
        return CropCells(
            self.stores,
            self.store_index[cells],
            self.row[cells],
            self.labels[cells],
            self.augmentation,
            self.seed,
        )

    def __getstate__(self) -> dict:
        # Memory maps are not shipped to workers: each process maps the files itself.
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def _images(self, number: int) -> np.ndarray:
        images = self._open.get(number)
        if images is None:
            images = self._open[number] = CropStore.open(self.stores[number]).images
        return images

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            epoch, draw, i = key
        else:
            epoch = draw = None
            i = key
        image = np.asarray(self._images(self.store_index[i])[self.row[i]], dtype=np.float32)
        if epoch is not None and self.augmentation is not None:
            rng = np.random.default_rng([self.seed, epoch, draw])
            image = augment(image, rng, self.augmentation)
        return torch.from_numpy(image), int(self.labels[i])


class BalancedDraws(Sampler):
    """Class-balanced draws with replacement for one epoch, as ``(epoch, draw, cell)`` keys.

    Each class is drawn equally often on average (weights 1 / class size, via
    :class:`torch.utils.data.WeightedRandomSampler`); the generator is seeded by
    ``(seed, epoch)``, so an epoch's draws are the same whether or not training resumed.
    """

    def __init__(self, labels: Sequence[int], num_draws: int, seed: int, epoch: int) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        )
        self.epoch = int(epoch)
        self.sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_draws,
            replacement=True,
            generator=generator,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for draw, cell in enumerate(self.sampler):
            yield self.epoch, draw, int(cell)


def check_stores(
    stores: Sequence[Path], channels: Sequence[str], crop_shape: Sequence[int]
) -> dict[str, Any]:
    """Check every store has the configured channels and crop shape; return the normalisation.

    The normalisation recorded in the checkpoint is that of the first store (the crop stage
    writes the same method for every well).
    """
    normalization: dict[str, Any] = {}
    for i, path in enumerate(stores):
        store = CropStore.open(path)
        if list(store.channels) != list(channels):
            raise InputError(
                f"{path}: store channels {store.channels} differ from config channels {list(channels)}"
            )
        if tuple(store.crop_shape) != tuple(crop_shape):
            raise InputError(
                f"{path}: store crop shape {list(store.crop_shape)} differs from config "
                f"crops.shape {list(crop_shape)}"
            )
        if i == 0:
            normalization = store.normalization
    return normalization
