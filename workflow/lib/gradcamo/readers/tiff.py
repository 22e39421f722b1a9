"""TIFF readers: one file per field (OME-TIFF, ImageJ hyperstack, plain multi-page), one ZYX
file per channel per field, and the 2D planes of per-plane exports.

tifffile reads every TIFF flavour; what is written here is what it leaves to the caller:
the axes without squeezing (tifffile drops a C of 1, so a correct one-channel ZCYX OME-TIFF
reads back as ZYX), the page order of files that carry no axes, the channel names and voxel
size in the metadata, and a cut-short file told apart from a readable one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from gradcamo.errors import InputError
from gradcamo.readers.base import (
    ImageSettings,
    Site,
    SiteReader,
    channel_order,
    check_voxel_size,
    check_zstack,
)

#: Orders of the pages of a TIFF without axes metadata that can be declared.
PAGE_ORDERS = ("ZCYX", "CZYX")
#: Length units of OME and ImageJ metadata, in micrometres.
_MICROMETRES = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}


@dataclass(frozen=True)
class TiffStack:
    """A z-stack as its file has it.

    data: ``(Z, C, Y, X)`` in the file's channel order.
    channel_names: the file's channel names (OME), or None when it carries none.
    voxel_size: ``(Z, Y, X)`` µm from the metadata, None per axis it does not give.
    """

    data: np.ndarray
    channel_names: list[str] | None
    voxel_size: tuple[float | None, float | None, float | None]


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


def _ome_metadata(tif: tifffile.TiffFile) -> tuple[list[str] | None, tuple]:
    """Channel names and voxel size (Z, Y, X µm) of an OME-TIFF's first image."""
    try:
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
    except Exception:  # malformed OME-XML: the pixels may still be fine
        return None, (None, None, None)
    image = ome.get("Image")
    image = image[0] if isinstance(image, list) else image
    pixels = (image or {}).get("Pixels", {})
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = [c.get("Name") for c in channels if isinstance(c, dict)]
    names = names if names and all(isinstance(n, str) and n for n in names) else None

    def size(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        unit = _MICROMETRES.get(str(pixels.get(f"PhysicalSize{axis}Unit", "µm")))
        return None if value is None or unit is None else float(value) * unit

    return names, (size("Z"), size("Y"), size("X"))


def _imagej_voxel_size(tif: tifffile.TiffFile) -> tuple:
    """Voxel size (Z, Y, X µm) of an ImageJ hyperstack, where its unit is a length."""
    meta = tif.imagej_metadata or {}
    unit = _MICROMETRES.get(str(meta.get("unit", "")).replace("\\u00B5", "µ"))
    if unit is None:
        return None, None, None
    page = tif.pages[0]

    def pixel(tag: str) -> float | None:
        value = page.tags.get(tag)
        if value is None:
            return None
        num, den = value.value
        return den / num * unit if num else None

    spacing = meta.get("spacing")
    return (
        None if spacing is None else float(spacing) * unit,
        pixel("YResolution"),
        pixel("XResolution"),
    )


def read_tiff_stack(path: str | os.PathLike, n_channels: int, page_order: str | None = None) -> TiffStack:
    """Read one field's z-stack from a TIFF / OME-TIFF / ImageJ hyperstack.

    Parameters
    ----------
    path: the file.
    n_channels: the number of channels the configuration expects (splits the pages of a
        file without axes metadata).
    page_order: how the pages of a file without axes metadata are ordered (``"ZCYX"``: all
        channels of plane 1, then plane 2, ...; ``"CZYX"``: all planes of channel 1, ...).
        None: such a file is refused, never guessed.

    Returns
    -------
    :class:`TiffStack` with ``(Z, C, Y, X)`` data in the file's dtype and channel order. A
    file with one plane (CYX) or one channel (ZYX, where the configuration has one) gets
    that axis as length 1.

    Raises
    ------
    InputError: the file is missing, unreadable or truncated; its axes are not ZCYX (or
        undeclared); its pixel type is not supported -- the message names the file.
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
            # Unsqueezed: tifffile drops length-1 axes (a C of 1) from series.axes.
            axes = series.get_axes(False).upper()
            data = series.asarray().reshape(series.get_shape(False))
            names, voxel_size = (None, (None, None, None))
            if tif.is_ome:
                names, voxel_size = _ome_metadata(tif)
            elif tif.is_imagej:
                voxel_size = _imagej_voxel_size(tif)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: image file does not exist") from None
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from None
    finally:
        tifffile_log.removeHandler(warnings)
    # Drop length-1 axes other than the ones we need (T, S, ...).
    for ax in list(axes):
        if ax not in "ZCYX" and data.shape[axes.index(ax)] == 1:
            data = data.squeeze(axes.index(ax))
            axes = axes.replace(ax, "", 1)
    if set(axes) <= set("IQ") | set("YX") and axes.endswith("YX") and axes != "YX":
        data, axes = _declared_order(path, data, axes, n_channels, page_order)
    for ax in "ZC":  # a single plane (CYX) or a single channel (ZYX)
        if ax not in axes and len(axes) == 3 and set(axes) <= set("ZCYX"):
            data, axes = data[None], ax + axes
    if sorted(axes) != sorted("ZCYX"):
        raise InputError(f"{path}: axes are {axes!r} (shape {data.shape}); expected ZCYX or CZYX")
    data = np.transpose(data, [axes.index(a) for a in "ZCYX"])
    if names is not None and len(names) != data.shape[1]:
        names = None  # metadata that does not describe the pixels is no evidence
    return TiffStack(check_zstack(data, str(path)), names, voxel_size)


def _declared_order(
    path: Path, data: np.ndarray, axes: str, n_channels: int, page_order: str | None
) -> tuple[np.ndarray, str]:
    """A stack whose axes the file does not name (tifffile's 'Q'/'I'): by the declared page
    order, either as its shape (``QQYX``, a tifffile-shaped file) or by splitting the pages."""
    pages = int(np.prod(data.shape[:-2]))
    if page_order is None:
        raise InputError(
            f"{path}: a TIFF without axes metadata (axes {axes!r}, shape {data.shape}, {pages} "
            f"pages); declare its page order with config key 'images.page_order' "
            f"({' or '.join(PAGE_ORDERS)}), or save it as OME-TIFF"
        )
    if len(axes) == 4:  # the file's own shape, read in the declared order
        return data, page_order
    if pages % n_channels:
        raise InputError(
            f"{path}: {pages} pages cannot be split into {n_channels} channels (page order {page_order})"
        )
    flat = data.reshape(pages, *data.shape[-2:])
    if page_order == "CZYX":
        return flat.reshape(n_channels, -1, *flat.shape[1:]), "CZYX"
    return flat.reshape(-1, n_channels, *flat.shape[1:]), "ZCYX"


def read_zstack(path: str | os.PathLike, settings: ImageSettings, where: str | None = None) -> np.ndarray:
    """One field's ZCYX z-stack in the configuration's channel order.

    The file's channel names, where it has them, are matched to the configured channels by
    name (``images.channel_names`` maps them); its voxel size, where it gives one, must agree
    with ``voxel_size``. A file without channel names is taken in the configuration's order.
    """
    where = where or str(path)
    stack = read_tiff_stack(path, len(settings.channels), settings.page_order)
    order = channel_order(stack.channel_names, settings, where)
    check_voxel_size(stack.voxel_size, settings, where)
    if order is not None and order != list(range(stack.data.shape[1])):
        return stack.data[:, order]  # a copy; in the file's order the data is returned as read
    if order is not None:
        return stack.data
    if stack.data.shape[1] != len(settings.channels):
        raise InputError(
            f"{where}: has {stack.data.shape[1]} channels, the configuration lists "
            f"{len(settings.channels)} ({', '.join(settings.channels)})"
        )
    return stack.data


def read_plane(path: str | os.PathLike, frame: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """One 2D plane (YX) of a per-plane export: page ``frame`` of ``path``; into ``out``
    (a C-contiguous YX array of the plane's shape and dtype) when given."""
    try:
        with tifffile.TiffFile(path) as tif:
            if frame >= len(tif.pages):
                raise InputError(f"{path}: has {len(tif.pages)} page(s), the index names page {frame + 1}")
            page = tif.pages[frame]
            if len(page.shape) != 2:
                raise InputError(f"{path}: page {frame + 1} has shape {page.shape}; expected one 2D plane")
            if out is not None and (page.shape != out.shape or page.dtype != out.dtype):
                raise InputError(
                    f"{path}: plane {page.shape} {page.dtype} differs from the site's other planes "
                    f"({out.shape} {out.dtype})"
                )
            return page.asarray(out=out)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: image file does not exist") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from None


class TiffReader(SiteReader):
    """Layout ``tiff``: one z-stack file per field (the sheet's ``image``)."""

    def read(self, site: Site) -> np.ndarray:
        if site.image is None:
            raise InputError(f"{site.name}: no 'image' in the sample sheet")
        return read_zstack(site.image, self.settings)


class ChannelFilesReader(SiteReader):
    """Layout ``channel_files``: one ZYX file per channel per field (sheet columns
    ``image_<channel>``), the layout 3D Cell Painting groups stack per-plane exports into."""

    def read(self, site: Site) -> np.ndarray:
        planes = []
        for channel in self.settings.channels:
            path = site.channel_images.get(channel)
            if path is None:
                raise InputError(f"{site.name}: no sheet column 'image_{channel}' for channel {channel!r}")
            # One channel: pages without axes metadata can only be planes.
            stack = read_tiff_stack(path, 1, "ZCYX")
            if stack.data.shape[1] != 1:
                raise InputError(
                    f"{path}: has {stack.data.shape[1]} channels; a channel file holds one (ZYX)"
                )
            check_voxel_size(stack.voxel_size, self.settings, str(path))
            planes.append(stack.data[:, 0])
        shapes = {p.shape for p in planes}
        dtypes = {p.dtype for p in planes}
        if len(shapes) > 1 or len(dtypes) > 1:
            described = ", ".join(f"{c}: {p.shape} {p.dtype}" for c, p in zip(self.settings.channels, planes))
            raise InputError(f"{site.name}: its channel files differ in shape or type ({described})")
        return np.stack(planes, axis=1)
