"""Image I/O at the edges: TIFF z-stacks (ZCYX), label images (ZYX) and atomic writes.

Everything here reads or writes files; the rest of the library works on arrays.
"""

from __future__ import annotations

import contextlib
import glob
import logging
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


#: Pixel types a z-stack may have (8- and 16-bit cameras, float32 from processing).
ZSTACK_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
#: Orders of the pages of a plain multi-page TIFF (no axes metadata) that can be declared.
PAGE_ORDERS = ("ZCYX", "CZYX")


class _OffsetWarnings(logging.Handler):
    """Collects tifffile's warnings about offsets past the end of the file (a cut-short
    file: tifffile then quietly reads the pages before the cut)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "offset" in message and "invalid" in message:
            self.messages.append(message)


def _truncation(tif: tifffile.TiffFile, path: Path, warnings: _OffsetWarnings) -> str | None:
    """Why a TIFF looks cut short or damaged, or None: a page's data ending past the end of
    the file, or a page or tag whose offset points past it."""
    size = path.stat().st_size
    for k, page in enumerate(tif.pages):  # walks every page: a broken chain shows here
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if offset + count > size:
                return (
                    f"page {k + 1}'s data ends at byte {offset + count}, but the file has "
                    f"{size} bytes: it is truncated or damaged"
                )
    if warnings.messages:
        return (
            f"the file ({size} bytes) is truncated or damaged: after {len(tif.pages)} "
            f"page(s), {warnings.messages[0].strip()}"
        )
    return None


def read_zstack(path: str | os.PathLike, n_channels: int, page_order: str | None = None) -> np.ndarray:
    """Read a z-stack TIFF / OME-TIFF as a ZCYX array.

    Parameters
    ----------
    path: the TIFF file.
    n_channels: the number of channels the configuration expects.
    page_order: how the pages of a plain multi-page TIFF without axes metadata are ordered
        (``"ZCYX"``: all channels of plane 1, then plane 2, ...; ``"CZYX"``: all planes of
        channel 1, then channel 2, ...). None: such a file is refused, never guessed.

    Returns
    -------
    ``(Z, C, Y, X)`` array in the file's dtype, one of :data:`ZSTACK_DTYPES`.

    Raises
    ------
    InputError: the file is missing, unreadable or truncated, its axes are not ZCYX (or
        undeclared), its pixel type is not one of :data:`ZSTACK_DTYPES`, or its number of
        channels differs from ``n_channels`` -- the message names the file.
    """
    path = Path(path)
    warnings = _OffsetWarnings()
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addHandler(warnings)
    try:
        with tifffile.TiffFile(path) as tif:
            truncated = _truncation(tif, path, warnings)
            if truncated:
                raise InputError(f"{path}: {truncated}")
            series = tif.series[0]
            axes = series.axes.upper()
            data = series.asarray()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: image file does not exist") from None
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from None
    finally:
        tifffile_log.removeHandler(warnings)
    # Drop singleton axes other than the ones we need (e.g. a T or S of length 1).
    for ax in list(axes):
        if ax not in "ZCYX" and data.shape[axes.index(ax)] == 1:
            data = data.squeeze(axes.index(ax))
            axes = axes.replace(ax, "")
    if axes == "IYX" or axes == "QYX":
        # Plain multi-page TIFF without axis metadata: the page order must be declared.
        if page_order is None:
            raise InputError(
                f"{path}: a multi-page TIFF without axes metadata ({data.shape[0]} pages); "
                f"declare its page order with config key 'images.page_order' "
                f"({' or '.join(PAGE_ORDERS)}), or save it as OME-TIFF"
            )
        if data.shape[0] % n_channels:
            raise InputError(
                f"{path}: {data.shape[0]} pages cannot be split into {n_channels} channels "
                f"(page order {page_order})"
            )
        if page_order == "CZYX":
            data = data.reshape(n_channels, -1, *data.shape[1:]).swapaxes(0, 1)
        else:
            data = data.reshape(-1, n_channels, *data.shape[1:])
        axes = "ZCYX"
    if sorted(axes) != sorted("ZCYX"):
        raise InputError(f"{path}: axes are {axes!r} (shape {data.shape}); expected ZCYX")
    data = np.transpose(data, [axes.index(a) for a in "ZCYX"])
    if data.dtype not in ZSTACK_DTYPES:
        raise InputError(
            f"{path}: pixel type {data.dtype} is not supported; z-stacks must be uint8, uint16 or float32"
        )
    if data.shape[1] != n_channels:
        raise InputError(f"{path}: has {data.shape[1]} channels, the configuration lists {n_channels}")
    return data


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
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
) -> None:
    """Write a ZCYX z-stack as a compressed OME-TIFF with channel names and voxel size (µm, ZYX)."""
    if image.ndim != 4 or image.shape[1] != len(channels):
        raise ValueError(f"expected ZCYX with {len(channels)} channels, got {image.shape}")
    tifffile.imwrite(
        path,
        image,
        ome=True,
        photometric="minisblack",
        compression="zlib",
        compressionargs={"level": 9},
        predictor=True,
        metadata={
            "axes": "ZCYX",
            "Channel": {"Name": list(channels)},
            "PhysicalSizeZ": float(voxel_size[0]),
            "PhysicalSizeY": float(voxel_size[1]),
            "PhysicalSizeX": float(voxel_size[2]),
        },
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
