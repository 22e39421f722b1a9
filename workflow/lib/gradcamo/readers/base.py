"""The interface every layout's reader implements, and the checks they share.

A *site* is one field of view of one well. Whatever the layout its images are stored in
(one file per field, one file per channel, one 2D file per plane and channel, an OME-Zarr
plate), a reader turns it into one ``(Z, C, Y, X)`` array whose C axis is in the
configuration's channel order, matched by name. Everything after the reader takes arrays.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from gradcamo.errors import InputError

#: Pixel types a z-stack may have (8- and 16-bit cameras, float32 from processing).
ZSTACK_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True)
class ImageSettings:
    """How the screen's images are stored: the ``images`` section of the configuration,
    with ``channels`` and ``voxel_size`` (see ``config/README.md`` for each key).

    channels: the configuration's channel names, in the order every reader returns them.
    layout: one of :data:`gradcamo.readers.LAYOUTS`.
    page_order: ``"ZCYX"``/``"CZYX"`` for TIFFs without axes metadata, or None.
    channel_names: configuration channel -> the export's name for it (absent: the same).
    voxel_size: ``(Z, Y, X)`` micrometres the configuration declares.
    voxel_size_tolerance: relative difference from the export's metadata that is an error.
    pattern: for layout ``pattern``: ``{"glob": ..., "regex": ...}``.
    z_column: for layout ``loaddata``: the column numbering the planes (None: pe2loaddata's).
    path_map: prefix -> prefix: where an export's index says its files are -> where they are.
    """

    channels: tuple[str, ...]
    layout: str
    page_order: str | None
    channel_names: Mapping[str, str]
    voxel_size: tuple[float, float, float]
    voxel_size_tolerance: float
    pattern: Mapping[str, Any] = field(default_factory=dict)
    z_column: str | None = None
    path_map: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ImageSettings":
        """From a (schema-validated, defaults filled) workflow configuration."""
        images = config["images"]
        return cls(
            channels=tuple(config["channels"]),
            layout=images["layout"],
            page_order=images["page_order"],
            channel_names=dict(images["channel_names"]),
            voxel_size=tuple(float(v) for v in config["voxel_size"]),
            voxel_size_tolerance=float(images["voxel_size_tolerance"]),
            pattern=dict(images["pattern"] or {}),
            z_column=images["loaddata"]["z_column"],
            path_map=dict(images["path_map"]),
        )

    def export_name(self, channel: str) -> str:
        """The export's name of a configured channel."""
        return self.channel_names.get(channel, channel)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for Snakemake params and JSON)."""
        return {
            "channels": list(self.channels),
            "layout": self.layout,
            "page_order": self.page_order,
            "channel_names": dict(self.channel_names),
            "voxel_size": list(self.voxel_size),
            "voxel_size_tolerance": self.voxel_size_tolerance,
            "pattern": dict(self.pattern),
            "z_column": self.z_column,
            "path_map": dict(self.path_map),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ImageSettings":
        """Inverse of :meth:`as_dict`."""
        return cls(
            channels=tuple(values["channels"]),
            layout=values["layout"],
            page_order=values["page_order"],
            channel_names=dict(values["channel_names"]),
            voxel_size=tuple(values["voxel_size"]),
            voxel_size_tolerance=float(values["voxel_size_tolerance"]),
            pattern=dict(values.get("pattern") or {}),
            z_column=values.get("z_column"),
            path_map=dict(values.get("path_map") or {}),
        )


@dataclass(frozen=True)
class Site:
    """One field of view as the sample sheet names it.

    image: the sheet's ``image``: a z-stack file (layout ``tiff``), the export's index or
        folder (per-plane layouts), the plate's ``.zarr`` folder (``ome_zarr``); None for
        ``channel_files``.
    channel_images: for ``channel_files``: configured channel -> its ZYX file.
    """

    plate: str
    well: str
    site: int
    image: str | None = None
    channel_images: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.plate}/{self.well} site {self.site}"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Site":
        """From a sheet row as a dict (``image_<channel>`` keys make ``channel_images``)."""
        channel_images = {
            key[len("image_") :]: value
            for key, value in record.items()
            if key.startswith("image_") and isinstance(value, str) and value
        }
        image = record.get("image")
        return cls(
            plate=str(record["plate"]),
            well=str(record["well"]),
            site=int(record["site"]),
            image=image if isinstance(image, str) and image else None,
            channel_images=channel_images,
        )


class SiteReader(ABC):
    """Reads sites of one layout as ZCYX arrays in the configuration's channel order."""

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings

    @abstractmethod
    def read(self, site: Site) -> np.ndarray:
        """The site's ``(Z, C, Y, X)`` array (uint8, uint16 or float32), C in
        ``settings.channels`` order. Raises :class:`InputError` naming the file and site."""


def channel_order(found: Sequence[str] | None, settings: ImageSettings, where: str) -> list[int] | None:
    """Positions in ``found`` (the export's channel names) of the configured channels.

    None when the export carries no channel names (a plain TIFF, an ImageJ hyperstack): its
    C axis is then taken in the configuration's order, the only order there is.

    Raises
    ------
    InputError: a configured channel whose export name is not among ``found`` (the message
        lists what is there and the config key that maps names), or a name that ``found``
        holds twice.
    """
    if found is None:
        return None
    found = [str(name) for name in found]
    order = []
    for channel in settings.channels:
        name = settings.export_name(channel)
        hits = [i for i, f in enumerate(found) if f == name]
        if len(hits) > 1:
            raise InputError(f"{where}: channel name {name!r} occurs {len(hits)} times in {found}")
        if not hits:
            mapped = (
                f"config key 'images.channel_names.{channel}' is {name!r}"
                if channel in settings.channel_names
                else f"no config key 'images.channel_names.{channel}' maps it"
            )
            raise InputError(
                f"{where}: configured channel {channel!r} is not in the export's channels "
                f"{found} ({mapped}): set images.channel_names.{channel} to the export's name "
                "of that stain"
            )
        order.append(hits[0])
    return order


def check_voxel_size(found: Sequence[float | None] | None, settings: ImageSettings, where: str) -> None:
    """Compare the export's voxel size ``(Z, Y, X)`` µm (None where it does not say) with the
    configuration's ``voxel_size``; a relative difference above ``voxel_size_tolerance`` is
    an :class:`InputError` naming both and the key."""
    if found is None:
        return
    for axis, have, want in zip("ZYX", found, settings.voxel_size):
        if have is None or not math.isfinite(have) or have <= 0:
            continue
        if abs(have - want) > settings.voxel_size_tolerance * want:
            shown = ", ".join("?" if v is None else f"{v:.4g}" for v in found)
            raise InputError(
                f"{where}: the export's voxel size is ({shown}) µm (Z, Y, X), but config key "
                f"'voxel_size' is {list(settings.voxel_size)} ({axis} differs by more than "
                f"images.voxel_size_tolerance = {settings.voxel_size_tolerance:g}): set "
                "voxel_size to the export's, or fix the export's metadata"
            )


def check_zstack(data: np.ndarray, where: str) -> np.ndarray:
    """Refuse pixel types other than :data:`ZSTACK_DTYPES`."""
    if data.dtype not in ZSTACK_DTYPES:
        raise InputError(
            f"{where}: pixel type {data.dtype} is not supported; z-stacks must be uint8, uint16 or float32"
        )
    return data


def map_path(path: str, path_map: Mapping[str, str] | None) -> str:
    """``path`` with the first matching prefix of ``path_map`` (``images.path_map``: where an
    export's index was written -> where its files are now) replaced."""
    for old, new in (path_map or {}).items():
        if path.startswith(old):
            return new + path[len(old) :]
    return path
