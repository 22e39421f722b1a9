"""File I/O at the edges: label images (ZYX), writing z-stacks, and atomic writes.

Z-stacks are read by :mod:`gradcamo.readers` (one reader per input layout). Everything
here reads or writes files; the rest of the library works on arrays.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tifffile

from gradcamo.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    A failing writer leaves nothing at ``path`` (no partial output). Works for files and
    for folders (whatever the caller creates at the yielded path). A writer killed outright
    (SIGKILL, the OOM killer) cannot clean up: its temporary folder is removed by the next
    write of the same path, which is the rerun of the same job (a workflow never runs two
    jobs for one output at once).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):  # mkdtemp's names, below
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmpdir / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def read_labels(path: str | os.PathLike, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a label image (ZYX, integer labels, 0 = background).

    ``shape`` (Z, Y, X), when given, must match -- otherwise an :class:`InputError`
    names the file and both shapes.
    """
    path = Path(path)
    try:
        labels = tifffile.imread(path)
    except FileNotFoundError:
        raise InputError(f"{path}: label image does not exist") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from None
    labels = np.squeeze(labels) if labels.ndim > 3 else labels
    if labels.ndim == 2:
        labels = labels[None]
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}: label image has dtype {labels.dtype}; expected integers")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise InputError(
            f"{path}: label image has shape {tuple(labels.shape)} (ZYX) but its z-stack has {tuple(shape)}"
        )
    return labels


def write_zstack(
    path: str | os.PathLike,
    image: np.ndarray,
    channels: Sequence[str],
    voxel_size: Sequence[float] | None = None,
    level: int = 9,
) -> None:
    """Write a ZCYX z-stack as a compressed OME-TIFF with channel names and, when given, the
    voxel size (µm, ZYX; None writes none, so a reader has nothing to check it against);
    ``level``: zlib's (9 the smallest files, 6 about ten times faster and 10 % larger)."""
    if image.ndim != 4 or image.shape[1] != len(channels):
        raise ValueError(f"expected ZCYX with {len(channels)} channels, got {image.shape}")
    metadata = {"axes": "ZCYX", "Channel": {"Name": list(channels)}}
    if voxel_size is not None:
        metadata.update(zip(("PhysicalSizeZ", "PhysicalSizeY", "PhysicalSizeX"), map(float, voxel_size)))
    tifffile.imwrite(
        path,
        image,
        ome=True,
        photometric="minisblack",
        compression="zlib",
        compressionargs={"level": int(level)},
        predictor=True,
        metadata=metadata,
    )


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a ZYX label image as an ImageJ-compatible TIFF (opens as a stack in Fiji/napari)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected ZYX labels, got shape {labels.shape}")
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    data = labels.astype(dtype)
    if dtype == np.uint16:
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"}, compression="zlib")
    else:  # ImageJ hyperstacks cannot hold uint32
        tifffile.imwrite(path, data, metadata={"axes": "ZYX"}, compression="zlib")


def save_figure(figure, path: str | os.PathLike, dpi: int = 150) -> None:
    """Write a matplotlib ``figure`` as a PNG at ``path`` (atomically: no partial file on
    failure). Here, not in :mod:`gradcamo.figures`, so that writing a figure does not import
    UMAP (the studies' summary draws its curve without it)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
