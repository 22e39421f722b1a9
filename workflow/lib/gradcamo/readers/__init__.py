"""Readers of every layout a screen's images come in, behind one interface.

>>> settings = ImageSettings.from_config(config)
>>> reader = open_reader(settings, index)          # index: the plate's plane index, or None
>>> zcyx = reader.read(Site("P1", "B02", 1, image="..."))

Layouts (config key ``images.layout``):

- ``tiff``: one OME-TIFF / ImageJ hyperstack / multi-page TIFF per field (:mod:`.tiff`);
- ``channel_files``: one ZYX file per channel per field, sheet columns ``image_<channel>``;
- ``harmony``: Opera Phenix / Operetta exports with their ``Index.idx.xml``/``Index.xml``;
- ``imagexpress``: MetaXpress / HCS.ai plate folders;
- ``cellvoyager``: Yokogawa exports with their ``MeasurementData.mlf``;
- ``loaddata``: CellProfiler LoadData CSVs;
- ``pattern``: per-plane files matched by ``images.pattern`` (glob and named-group regex);
- ``ome_zarr``: OME-Zarr HCS plates (NGFF 0.4 and 0.5).

The per-plane layouts (:data:`PLANE_LAYOUTS`) are first indexed once per plate
(:func:`index_sites`: every plane of the sheet's sites, checked), then read from the index.
"""

from __future__ import annotations

import logging
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Sequence

import pandas as pd

from gradcamo.errors import InputError
from gradcamo.io import read_labels
from gradcamo.readers.base import ImageSettings, Site, SiteReader
from gradcamo.readers.cellvoyager import cellvoyager_planes
from gradcamo.readers.harmony import harmony_planes
from gradcamo.readers.imagexpress import imagexpress_planes
from gradcamo.readers.loaddata import loaddata_planes
from gradcamo.readers.ome_zarr import OmeZarrReader
from gradcamo.readers.pattern import pattern_planes
from gradcamo.readers.planes import PlaneTable, PlaneTableReader, select_sites
from gradcamo.readers.tiff import ChannelFilesReader, TiffReader
from gradcamo.sites import SiteSource

log = logging.getLogger(__name__)

LAYOUTS = (
    "tiff",
    "channel_files",
    "harmony",
    "imagexpress",
    "cellvoyager",
    "loaddata",
    "pattern",
    "ome_zarr",
)
#: Layouts stored as one 2D image per plane and channel, read through a plate's index.
PLANE_LAYOUTS = ("harmony", "imagexpress", "cellvoyager", "loaddata", "pattern")
#: Readers of the layouts read site by site where they lie.
_READERS = {"tiff": TiffReader, "channel_files": ChannelFilesReader, "ome_zarr": OmeZarrReader}

__all__ = [
    "LAYOUTS",
    "PLANE_LAYOUTS",
    "ImageSettings",
    "PlaneTable",
    "Site",
    "SiteReader",
    "index_sites",
    "labelled_sites",
    "open_reader",
    "plane_table",
]


def plane_table(source: str | Path, settings: ImageSettings) -> PlaneTable:
    """Every 2D image of one export of a per-plane layout."""
    listers = {
        "harmony": lambda: harmony_planes(source, settings.path_map),
        "imagexpress": lambda: imagexpress_planes(source),
        "cellvoyager": lambda: cellvoyager_planes(source, settings.path_map),
        "loaddata": lambda: loaddata_planes(source, settings.z_column, settings.path_map),
        "pattern": lambda: pattern_planes(source, settings.pattern),
    }
    if settings.layout not in listers:
        raise ValueError(f"layout {settings.layout!r} is not a per-plane layout ({', '.join(PLANE_LAYOUTS)})")
    return listers[settings.layout]()


def index_sites(sites: Sequence[Site], settings: ImageSettings) -> pd.DataFrame:
    """The planes of ``sites`` (per-plane layouts), checked (:func:`.planes.select_sites`):
    each export the sites name is listed once."""
    tables = []
    for source, group in groupby(sorted(sites, key=lambda s: str(s.image)), key=lambda s: s.image):
        if source is None:
            raise InputError(f"{next(group).name}: no 'image' (the export's index or folder) in the sheet")
        table = plane_table(source, settings)
        log.info("export %s: %s", source, table.summary())
        tables.append(select_sites(table, list(group), settings))
    return pd.concat(tables, ignore_index=True)


def open_reader(settings: ImageSettings, index: Sequence[str | Path] = ()) -> SiteReader:
    """The reader of ``settings.layout``; per-plane layouts read from ``index`` (the Parquet
    files :func:`index_sites` wrote for the plates of the sites to be read)."""
    if settings.layout in _READERS:
        return _READERS[settings.layout](settings)
    if settings.layout in PLANE_LAYOUTS:
        if not index:
            raise ValueError(f"layout {settings.layout!r} reads sites from a plane index; none given")
        return PlaneTableReader.from_index(settings, index)
    raise ValueError(f"unknown layout {settings.layout!r} (one of {', '.join(LAYOUTS)})")


def labelled_sites(reader: SiteReader, sites: Sequence[Site], labels: Sequence[str]) -> list[SiteSource]:
    """Each site with its label image file, for the array-level stages (:class:`SiteSource`):
    nothing is read until a stage asks for the site."""
    return [
        SiteSource(
            site.site,
            f"{site.name} (image {site.image or site.channel_images}, labels {path})",
            partial(reader.read, site),
            partial(read_labels, path),
        )
        for site, path in zip(sites, labels, strict=True)
    ]
