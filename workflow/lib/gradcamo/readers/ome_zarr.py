"""OME-Zarr HCS plates (NGFF 0.4, zarr v2; NGFF 0.5, zarr v3): one field at a time.

``plate.zarr`` lists its wells (``plate.wells[].path``, e.g. ``B/2``), each well its fields
(``well.images[].path``), each field is a multiscale image with axes ``(t,) c, (z,) y, x``
whose level 0 is full resolution; ``omero.channels[].label`` names the channels and the
level's scale transform gives the voxel size. Site ``n`` of a well is its ``n``-th field.

Read with ``ome-zarr`` (ome-zarr-py), the OME consortium's reference implementation: it reads
both NGFF versions behind one interface (zarr v3's ``ome`` attributes are unwrapped for it),
keeps to the spec as the spec moves, and needs no Java or network at run time; ngio and iohub
add their own data models on top, bioio-ome-zarr a plugin layer, none of which a field read
needs.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from gradcamo.errors import InputError
from gradcamo.readers.base import Site, SiteReader, channel_order, check_voxel_size, check_zstack
from gradcamo.wells import canonical_well

# ome-zarr logs a warning when a 0.4 plate is opened with its default (0.5) format: harmless.
logging.getLogger("ome_zarr").setLevel(logging.ERROR)
#: Axis units of NGFF, in micrometres (an axis without a unit says nothing about its size).
_UNITS = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6}


def _location(path: str | os.PathLike, subpath: str = ""):
    from ome_zarr.io import parse_url  # imported here: only this layout needs zarr

    location = parse_url(str(Path(path) / subpath) if subpath else str(path), mode="r")
    if location is None or not location.exists():
        raise InputError(f"{Path(path) / subpath}: not an OME-Zarr group")
    return location


@lru_cache(maxsize=8)
def plate_wells(path: str) -> dict[str, list[str]]:
    """Well (canonical name) -> its fields' paths inside the plate, in the plate's order."""
    plate = _location(path).root_attrs.get("plate")
    if plate is None:
        raise InputError(f"{path}: not an OME-Zarr HCS plate (no 'plate' attributes)")
    rows = [r["name"] for r in plate["rows"]]
    columns = [c["name"] for c in plate["columns"]]
    wells = {}
    for well in plate["wells"]:
        name = canonical_well(f"{rows[well['rowIndex']]}{columns[well['columnIndex']]}")
        images = _location(path, well["path"]).root_attrs.get("well", {}).get("images", [])
        wells[name] = [f"{well['path']}/{image['path']}" for image in images]
    return wells


def plate_name(path: str) -> str | None:
    """The plate's ``name`` attribute, if it has one."""
    return _location(path).root_attrs.get("plate", {}).get("name")


def zarr_sites(path: str | os.PathLike) -> pd.DataFrame:
    """One row per field of an OME-Zarr plate: ``well``, ``site`` (1-based), ``path``."""
    wells = plate_wells(str(path))
    return pd.DataFrame(
        [
            {"well": well, "site": k + 1, "path": field}
            for well, fields in wells.items()
            for k, field in enumerate(fields)
        ],
        columns=["well", "site", "path"],
    )


def read_field(path: str | os.PathLike, field: str) -> tuple[np.ndarray, list[str] | None, tuple]:
    """One field of a plate: ``(Z, C, Y, X)`` of its level 0, its channel labels (or None),
    its voxel size (Z, Y, X µm; None per axis without one)."""
    where = f"{path}/{field}"
    attrs = _location(path, field).root_attrs
    multiscales = attrs.get("multiscales")
    if not multiscales:
        raise InputError(f"{where}: not a multiscale image")
    multiscale = multiscales[0]
    axes = [a["name"].lower() if isinstance(a, dict) else str(a).lower() for a in multiscale["axes"]]
    level = multiscale["datasets"][0]
    data = np.asarray(_location(path, field).load(level["path"]).compute())
    for axis in [a for a in axes if a not in "czyx"]:
        if data.shape[axes.index(axis)] != 1:
            raise InputError(
                f"{where}: axis {axis!r} has length {data.shape[axes.index(axis)]}; gradcamo reads one"
            )
        data = data.squeeze(axes.index(axis))
        axes.remove(axis)
    for axis in ("z", "c"):
        if axis not in axes:
            data, axes = data[None], [axis, *axes]
    if sorted(axes) != sorted("czyx"):
        raise InputError(f"{where}: axes {axes}; expected (t,) c, (z,) y, x")
    data = np.transpose(data, [axes.index(a) for a in "zcyx"])
    scale = next(
        (t["scale"] for t in level.get("coordinateTransformations", []) if t["type"] == "scale"), None
    )
    voxel = [None, None, None]
    if scale is not None:
        units = {a["name"].lower(): a.get("unit") for a in multiscale["axes"] if isinstance(a, dict)}
        names = [a["name"].lower() if isinstance(a, dict) else str(a).lower() for a in multiscale["axes"]]
        for k, axis in enumerate("zyx"):
            if axis in names and units.get(axis) in _UNITS:
                voxel[k] = float(scale[names.index(axis)]) * _UNITS[units.get(axis)]
    channels = attrs.get("omero", {}).get("channels")
    labels = [c.get("label") for c in channels] if channels else None
    if labels is not None and (not all(labels) or len(labels) != data.shape[1]):
        labels = None
    return data, labels, tuple(voxel)


class OmeZarrReader(SiteReader):
    """Layout ``ome_zarr``: the sheet's ``image`` is the plate's ``.zarr`` folder."""

    def read(self, site: Site) -> np.ndarray:
        if site.image is None:
            raise InputError(f"{site.name}: no 'image' (the plate's .zarr folder) in the sample sheet")
        wells = plate_wells(site.image)
        fields = wells.get(site.well)
        if fields is None:
            raise InputError(f"{site.image}: has no well {site.well} (wells: {sorted(wells)[:12]})")
        if not 1 <= site.site <= len(fields):
            raise InputError(
                f"{site.image}: well {site.well} has {len(fields)} field(s); the sheet names site {site.site}"
            )
        data, labels, voxel = read_field(site.image, fields[site.site - 1])
        where = f"{site.image}/{fields[site.site - 1]}"
        check_voxel_size(voxel, self.settings, where)
        order = channel_order(labels, self.settings, where)
        if order is None and data.shape[1] != len(self.settings.channels):
            raise InputError(
                f"{where}: has {data.shape[1]} channels, the configuration lists "
                f"{len(self.settings.channels)}"
            )
        return check_zstack(np.ascontiguousarray(data if order is None else data[:, order]), where)
