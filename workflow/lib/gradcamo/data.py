"""Cells from many per-well crop stores as a PyTorch dataset, with seeded augmentation.

A cell is addressed by ``(store number, row in that store)``; images are read lazily from
the memory-mapped ``images.npy`` of each store (:class:`gradcamo.store.CropStore`), opened
once per process, so DataLoader workers each map the files themselves and nothing large
is pickled to them.

Training draws are ``(epoch, draw, cell)`` triples (:class:`BalancedDraws`); the
augmentation of a draw depends only on ``(seed, epoch, draw)``, so results do not depend on
the number of workers or on which worker reads which cell. :func:`cell_loader` is the data
path of training and evaluation over such a dataset.

One module because the dataset, its draws, the augmentation and the loader share one
addressing of cells and one seeding, which is what keeps results independent of the
workers; :class:`CropCells` alone is over 170 lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from gradcamo.context import cell_region
from gradcamo.errors import InputError
from gradcamo.store import MASK_BACKGROUND, CropStore


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


def augment_params(
    rng: np.random.Generator, augmentation: Augmentation, n_channels: int, square: bool
) -> np.ndarray:
    """One draw's transform as ``(4 + C,)`` float32: flip X, flip Y, flip Z (0/1), quarter
    turns in the YX plane, then the C channel gains (1 without jitter).

    The numbers are drawn in a fixed order from ``rng`` (one generator per draw, seeded by
    (seed, epoch, draw)), so the transform of a draw is the same in any worker and on any
    device; :func:`augment_batch` applies them.
    """
    flip_x = rng.random() < 0.5
    flip_y = rng.random() < 0.5
    flip_z = bool(augmentation.flip_z) and rng.random() < 0.5
    quarter_turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    j = augmentation.intensity_jitter
    gain = rng.uniform(1 - j, 1 + j, size=n_channels) if j > 0 else np.ones(n_channels)
    return np.concatenate([[flip_x, flip_y, flip_z, quarter_turns], gain.astype(np.float32)]).astype(
        np.float32
    )


def _oriented(volume: torch.Tensor, flip_x: int, flip_y: int, flip_z: int, turns: int) -> torch.Tensor:
    """One crop's flips and quarter turns; ``volume`` is ``(..., Z, Y, X)``."""
    dims = [d for d, flip in ((-1, flip_x), (-2, flip_y), (-3, flip_z)) if flip]
    if dims:
        volume = torch.flip(volume, dims)
    if turns % 4:
        volume = torch.rot90(volume, turns, dims=(-2, -1))
    return volume


def augment_batch(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply each cell's :func:`augment_params` to a batch ``images`` (N, C, Z, Y, X), on
    whatever device the batch is (the data path moves crops as float16 and augments after
    the transfer). ``params``: ``(N, 4 + C)``. Returns float32 (N, C, Z, Y, X).

    Flips and quarter turns permute voxels, and the gain is one float32 product per voxel,
    so the result is bit-identical to :func:`augment` of the same draw on the CPU.
    """
    images = images.float()
    params = params.to(images.device)
    flips = params[:, :4].round().long().tolist()
    out = torch.stack([_oriented(image, *flip) for image, flip in zip(images, flips)])
    gain = params[:, 4:].float().view(*params.shape[:1], -1, 1, 1, 1)
    return out * gain


def augment_masks(masks: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The flips and quarter turns of :func:`augment_batch` applied to the crops' masks
    ``(N, Z, Y, X)``, so each mask stays on its augmented crop."""
    flips = params[:, :4].round().long().tolist()
    return torch.stack([_oriented(mask, *flip) for mask, flip in zip(masks, flips)])


@dataclass(frozen=True)
class ContextSwap:
    """Context swapping, an augmentation that takes a shortcut out of the data.

    With ``probability``, a training draw's context -- everything outside its cell of
    interest widened by ``margin`` voxels (:func:`gradcamo.context.cell_region`) -- is
    replaced by the same voxels of another training cell's crop, drawn uniformly (so its
    treatment is independent of the draw's). The cell keeps its own voxels; neighbours,
    background and padding come from the other crop; where the other crop's own cell (widened
    alike) lies beyond this cell, voxels are drawn from the other crop's background instead.
    Whatever the context carries about the treatment then no longer predicts the label.
    """

    probability: float
    margin: int


def augment(image: np.ndarray, rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray:
    """One random, biology-preserving transform of a ``(C, Z, Y, X)`` crop, on the CPU: the
    reference :func:`augment_batch` is checked against, and what single items return.

    Hand-written rather than MONAI's random transforms: those keep one RandomState per
    transform object, whereas here every draw derives its own generator from
    (seed, epoch, draw) -- what makes augmentation independent of worker scheduling.
    """
    params = augment_params(rng, augmentation, image.shape[0], image.shape[-1] == image.shape[-2])
    flip_x, flip_y, flip_z, turns = (int(round(v)) for v in params[:4])
    out = image
    if flip_x:
        out = out[:, :, :, ::-1]
    if flip_y:
        out = out[:, :, ::-1, :]
    if flip_z:
        out = out[:, ::-1, :, :]
    out = np.rot90(out, k=turns, axes=(2, 3))
    out = np.ascontiguousarray(out, dtype=np.float32)
    return out * params[4:].reshape(-1, 1, 1, 1)  # not in place: ``out`` may be the caller's


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
    context_swap: swap training draws' contexts (:class:`ContextSwap`), each decided and
        its other cell drawn by a generator seeded by ``(seed, epoch, draw, 1)``.
    with_masks: batches carry the crops' masks (N×Z×Y×X uint8; what the training penalty
        needs), swapped and augmented with their crops.
    """

    def __init__(
        self,
        stores: Sequence[str | os.PathLike],
        store_index: Sequence[int],
        row: Sequence[int],
        labels: Sequence[int],
        augmentation: Augmentation | None = None,
        seed: int = 0,
        context_swap: ContextSwap | None = None,
        with_masks: bool = False,
    ) -> None:
        self.stores = [Path(p) for p in stores]
        self.store_index = np.asarray(store_index, dtype=np.int64)
        self.row = np.asarray(row, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if not (len(self.store_index) == len(self.row) == len(self.labels)):
            raise ValueError("store_index, row and labels must have the same length")
        self.augmentation = augmentation
        self.seed = int(seed)
        self.context_swap = context_swap if context_swap and context_swap.probability > 0 else None
        self.with_masks = bool(with_masks)
        self._open: dict[tuple[int, str], np.ndarray] = {}

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
            self.context_swap,
            self.with_masks,
        )

    def __getstate__(self) -> dict:
        # Memory maps are not shipped to workers: each process maps the files itself.
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def _array(self, number: int, name: str) -> np.ndarray:
        """The memory-mapped ``images`` or ``masks`` of store ``number``, opened once."""
        array = self._open.get((number, name))
        if array is None:
            array = self._open[number, name] = getattr(CropStore.open(self.stores[number]), name)
        return array

    def _images(self, number: int) -> np.ndarray:
        return self._array(number, "images")

    def _read(self, cells: np.ndarray, name: str) -> torch.Tensor:
        """``images`` (float16) or ``masks`` (uint8) of ``cells`` as one tensor, read store by
        store in row order (sequential reads), one copy each from the memory maps."""
        stores, rows = self.store_index[cells], self.row[cells]
        first = self._array(int(stores[0]), name)
        shape = (len(cells), *first.shape[1:])
        if torch.utils.data.get_worker_info() is not None:
            # Filled in place in shared memory, so the batch goes to the main process as is.
            tensor = torch.empty(shape, dtype=torch.from_numpy(first[:0]).dtype).share_memory_()
            out = tensor.numpy()
        else:
            # NumPy's allocator reuses the previous batch's freed memory; a fresh torch.empty
            # of this size maps new pages, and faulting them in halved the copy's speed
            # (2.0 vs 4.5 GB/s for 32 cells of 5x21x128x128 here).
            out = np.empty(shape, dtype=first.dtype)
            tensor = torch.from_numpy(out)
        for pos in np.lexsort((rows, stores)):
            out[pos] = self._array(int(stores[pos]), name)[rows[pos]]
        return tensor

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        """One cell: ``(image (C, Z, Y, X) float32, label)``, augmented on the CPU for a
        training key (the reference path; the loaders fetch batches, :meth:`__getitems__`)."""
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

    def __getitems__(self, keys: Sequence[int | tuple[int, int, int]]) -> CellBatch:
        """A batch as the data path moves it: the crops as stored (float16, N×C×Z×Y×X, read
        cell by cell in store and row order, one copy each from the memory maps), labels,
        and each training draw's :func:`augment_params` for :func:`augment_batch` to apply
        on the device after the transfer. Evaluation keys (integers) get no parameters."""
        cells = np.asarray([k[2] if isinstance(k, tuple) else k for k in keys], dtype=np.int64)
        training = isinstance(keys[0], tuple)
        images = self._read(cells, "images")
        swap = self.context_swap is not None and training
        masks = self._read(cells, "masks") if self.with_masks or swap else None
        if swap:
            self._swap_contexts(images.numpy(), masks.numpy(), keys)
        labels = torch.from_numpy(self.labels[cells])
        masks = masks if self.with_masks else None
        if self.augmentation is None or not training:
            return CellBatch(images, labels, torch.zeros((len(cells), 0)), masks)
        square = images.shape[-1] == images.shape[-2]
        params = np.stack(
            [
                augment_params(
                    np.random.default_rng([self.seed, epoch, draw]),
                    self.augmentation,
                    images.shape[1],
                    square,
                )
                for epoch, draw, _ in keys
            ]
        )
        return CellBatch(images, labels, torch.from_numpy(params), masks)

    def _swap_contexts(
        self, images: np.ndarray, masks: np.ndarray, keys: Sequence[tuple[int, int, int]]
    ) -> None:
        """:class:`ContextSwap` in place on a batch as stored (before augmentation):
        ``images`` (N, C, Z, Y, X) float16, ``masks`` (N, Z, Y, X) uint8."""
        swap = self.context_swap
        donors = []
        for pos, (epoch, draw, cell) in enumerate(keys):
            rng = np.random.default_rng([self.seed, epoch, draw, 1])
            if len(self) > 1 and rng.random() < swap.probability:  # another cell, never itself
                donors.append((pos, (cell + 1 + int(rng.integers(len(self) - 1))) % len(self), rng))
        if not donors:
            return
        at = np.asarray([d[0] for d in donors], dtype=np.int64)
        others = np.asarray([d[1] for d in donors], dtype=np.int64)
        other_images = self._read(others, "images").numpy()
        other_masks = self._read(others, "masks").numpy()
        own = cell_region(masks[at], swap.margin)  # (n, Z, Y, X)
        theirs = cell_region(other_masks, swap.margin)
        for k, (pos, _, rng) in enumerate(donors):
            # The other crop's cell is not context: where it lies beyond this cell, its voxels
            # are drawn from the other crop's own background (in the image, away from cells),
            # as the neutral fill of the audit is drawn, so no second cell's treatment shows.
            hole = theirs[k] & ~own[k]
            background = other_images[k][:, ~theirs[k] & (other_masks[k] == MASK_BACKGROUND)]
            background = background[:, np.any(background != 0, axis=0)]  # padding is exactly 0
            if hole.any() and background.shape[1] == 0:
                continue  # no background to draw from: this draw keeps its own context
            composite = np.where(own[k][None], images[pos], other_images[k])
            composite[:, hole] = background[
                :, rng.integers(max(1, background.shape[1]), size=int(hole.sum()))
            ]
            images[pos] = composite
            masks[pos] = np.where(own[k], masks[pos], np.where(hole, MASK_BACKGROUND, other_masks[k]))


class CellBatch(NamedTuple):
    """What a loader yields: ``images`` (N, C, Z, Y, X) as stored (float16), ``labels`` (N,)
    int64, ``params`` (N, 4 + C) float32 augmentation parameters, or (N, 0) for none, and
    ``masks`` (N, Z, Y, X) uint8 when the dataset was asked for them (else None)."""

    images: torch.Tensor
    labels: torch.Tensor
    params: torch.Tensor
    masks: torch.Tensor | None = None

    def to(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images float32, labels)`` on ``device``, augmented there if it has parameters."""
        images = self.images.to(device, non_blocking=True)
        labels = self.labels.to(device, non_blocking=True)
        if self.params.shape[1]:
            return augment_batch(images, self.params), labels
        return images.float(), labels

    def to_with_masks(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images float32, labels, masks uint8)`` on ``device``, the masks oriented as
        their augmented crops."""
        if self.masks is None:
            raise ValueError("this batch has no masks: make its CropCells with with_masks=True")
        images, labels = self.to(device)
        masks = self.masks.to(device, non_blocking=True)
        if self.params.shape[1]:
            masks = augment_masks(masks, self.params.to(device))
        return images, labels, masks


def as_batch(batch: CellBatch) -> CellBatch:
    """The loaders' ``collate_fn``: :meth:`CropCells.__getitems__` already made the batch."""
    return batch


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


def cell_loader(
    dataset: CropCells,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    seed: int,
    sampler: BalancedDraws | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """The data path of training and evaluation: batches of :class:`gradcamo.data.CellBatch`.

    The CPU side (the main process or ``num_workers`` workers) only reads and stacks the
    float16 crops (:meth:`CropCells.__getitems__`), pinned on CUDA; ``batch.to(device)``
    converts to float32 and applies each draw's augmentation on the device. An explicit
    generator keeps the DataLoader from drawing on torch's global RNG.
    """
    # Batches come whole from CropCells.__getitems__ (float16 as stored, augmentation
    # parameters beside them); CellBatch.to moves and augments them on the device.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=as_batch,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
