"""The per-well crop store: single-cell 3D crops with random access per cell.

A crop store is a folder holding four files, all in the same cell order::

    images.npy     float16 (N, C, Z, Y, X)  per-channel normalised intensities
    masks.npy      uint8   (N, Z, Y, X)     0 background, 1 cell of interest, 2 other cells
    cells.parquet  N rows                   the cell table (``Metadata_*`` columns only)
    store.json                              channels, crop shape (Z, Y, X), normalisation,
                                            the sample (cells per well, seed, the well's cells)

``.npy`` is read memory-mapped, so one cell is read without loading the well, by any tool
that reads NumPy files; a plain format needs no extra dependency on a cluster node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gradcamo.errors import InputError

STORE_FILES = ("images.npy", "masks.npy", "cells.parquet", "store.json")
MASK_BACKGROUND, MASK_CELL, MASK_OTHER = 0, 1, 2


def _load_npy(path: Path) -> np.ndarray:
    """Memory-map a .npy file; zero-length arrays cannot be mapped and are loaded instead."""
    arr = np.load(path, mmap_mode=None if os.path.getsize(path) < 4096 else "r")
    return arr


@dataclass
class CropStore:
    """A read-only view of one well's crop store.

    Attributes
    ----------
    images: ``(N, C, Z, Y, X)`` float16, memory-mapped.
    masks: ``(N, Z, Y, X)`` uint8, memory-mapped.
    cells: the cell table, N rows in crop order.
    channels: channel names, length C.
    crop_shape: ``(Z, Y, X)``.
    normalization: how intensities were normalised (dict, recorded in checkpoints).
    """

    path: Path
    images: np.ndarray
    masks: np.ndarray
    cells: pd.DataFrame
    channels: list[str]
    crop_shape: tuple[int, int, int]
    normalization: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CropStore":
        path = Path(path)
        missing = [name for name in STORE_FILES if not (path / name).exists()]
        if missing:
            raise InputError(f"{path}: not a crop store, missing {', '.join(missing)}")
        meta = json.loads((path / "store.json").read_text())
        images = _load_npy(path / "images.npy")
        masks = _load_npy(path / "masks.npy")
        cells = pd.read_parquet(path / "cells.parquet")
        if not (len(images) == len(masks) == len(cells)):
            raise InputError(
                f"{path}: images ({len(images)}), masks ({len(masks)}) and cells "
                f"({len(cells)}) disagree on the number of cells"
            )
        return cls(
            path=path,
            images=images,
            masks=masks,
            cells=cells,
            channels=list(meta["channels"]),
            crop_shape=tuple(meta["crop_shape"]),
            normalization=dict(meta.get("normalization", {})),
        )

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One cell: ``(image (C, Z, Y, X) float32, mask (Z, Y, X) uint8)``."""
        return np.asarray(self.images[index], dtype=np.float32), np.asarray(self.masks[index])


class CropStoreWriter:
    """Write a crop store cell block by cell block, with bounded memory.

    The number of cells must be known up front (it is, after segmentation and QC filters);
    blocks are written straight into memory-mapped files. Write into a temporary folder
    (see :func:`gradcamo.io.atomic_path`) so a failure leaves no partial store.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n_cells: int,
        channels: Sequence[str],
        crop_shape: Sequence[int],
        normalization: dict | None = None,
        sample: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.sample = dict(sample or {})
        self.path.mkdir(parents=True, exist_ok=True)
        self.n_cells = int(n_cells)
        self.channels = list(channels)
        self.crop_shape = tuple(int(s) for s in crop_shape)
        self.normalization = dict(normalization or {})
        img_shape = (self.n_cells, len(self.channels), *self.crop_shape)
        mask_shape = (self.n_cells, *self.crop_shape)
        if self.n_cells == 0:
            np.save(self.path / "images.npy", np.zeros(img_shape, np.float16))
            np.save(self.path / "masks.npy", np.zeros(mask_shape, np.uint8))
        else:
            # Create the full-size files now; each block is written through its own short-lived
            # mapping (see write), so written pages leave this process's resident memory.
            fmt = np.lib.format
            fmt.open_memmap(self.path / "images.npy", "w+", np.float16, img_shape).flush()
            fmt.open_memmap(self.path / "masks.npy", "w+", np.uint8, mask_shape).flush()
        self._written = 0

    def write(self, images: np.ndarray, masks: np.ndarray) -> None:
        """Append a block: ``images (n, C, Z, Y, X)``, ``masks (n, Z, Y, X)``."""
        n = len(images)
        if n == 0:
            return
        if self._written + n > self.n_cells:
            raise ValueError(f"writing {self._written + n} cells into a store of {self.n_cells}")
        sl = slice(self._written, self._written + n)
        for name, block, dtype in (("images.npy", images, np.float16), ("masks.npy", masks, np.uint8)):
            # A mapping that stays open would keep every written page resident (and counted
            # in the job's memory) until the end; unmapping after each block bounds it.
            target = np.load(self.path / name, mmap_mode="r+")
            target[sl] = block.astype(dtype)
            target.flush()
            del target
        self._written += n

    def close(self, cells: pd.DataFrame) -> None:
        """Finish the store with its cell table (one row per written cell, same order)."""
        if self._written != self.n_cells or len(cells) != self.n_cells:
            raise ValueError(
                f"store expects {self.n_cells} cells, {self._written} crops written, {len(cells)} table rows"
            )
        cells.reset_index(drop=True).to_parquet(self.path / "cells.parquet", index=False)
        meta = {
            "channels": self.channels,
            "crop_shape": list(self.crop_shape),
            "normalization": self.normalization,
            "n_cells": self.n_cells,
            **({"sample": self.sample} if self.sample else {}),
        }
        (self.path / "store.json").write_text(json.dumps(meta, indent=2))
