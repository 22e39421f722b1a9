"""Per-plane exports: the plane table every per-plane layout is read into, its checks, and
the stacking of one site's planes into a ZCYX array.

Opera Phenix/Operetta, ImageXpress, CellVoyager, CellProfiler LoadData CSVs and files
matched by a pattern all store one 2D image per (well, field, plane, channel). Each layout's
module only lists them (a :class:`PlaneTable`); what follows is shared: which planes belong to
the sample sheet's sites, whether any is missing or twice, and reading a site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gradcamo.errors import InputError
from gradcamo.readers.base import (
    ImageSettings,
    Site,
    SiteReader,
    channel_order,
    check_voxel_size,
    check_zstack,
)
from gradcamo.readers.tiff import read_plane

#: Columns of a plane table: one row per 2D image. ``plate`` is the export's plate name (or
#: None), ``site`` the field (1-based), ``plane`` the export's z index, ``channel`` the
#: export's channel name, ``path`` the file, ``frame`` the page within it, ``z`` the plane's
#: position in µm (NaN when unknown).
PLANE_COLUMNS = ["plate", "well", "site", "plane", "channel", "path", "frame", "z"]
#: Columns of a site's planes after :func:`select_sites`: the sheet's plate, ``z`` the
#: plane's index in the stack (0-based), ``channel`` the configured name.
SITE_PLANE_COLUMNS = ["plate", "well", "site", "z", "channel", "path", "frame"]


@dataclass(frozen=True)
class PlaneTable:
    """Every 2D image an export lists.

    planes: :data:`PLANE_COLUMNS`.
    source: what was read (an index file, a folder), for messages.
    pixel_size: Y/X pixel size in µm from the export's metadata, or None.
    channel_names: the export's channel names in its own order.
    """

    planes: pd.DataFrame
    source: str
    pixel_size: float | None
    channel_names: list[str]

    @property
    def z_step(self) -> float | None:
        """The z step (µm): the median difference of plane positions within each (site,
        channel), or None where positions are unknown or there is one plane."""
        known = self.planes.dropna(subset=["z"])
        if known.empty:
            return None
        steps = (
            known.sort_values("plane")
            .groupby(["plate", "well", "site", "channel"], dropna=False)["z"]
            .diff()
            .dropna()
            .abs()
        )
        return float(steps.median()) if len(steps) else None

    def summary(self) -> dict:
        """What the export holds: plates, wells, fields per well, planes, channels."""
        p = self.planes
        fields = p.groupby(["plate", "well"], dropna=False)["site"].nunique()
        planes = p.groupby(["plate", "well", "site", "channel"], dropna=False)["plane"].nunique()
        return {
            "source": self.source,
            "plates": sorted({str(v) for v in p["plate"].dropna()}),
            "wells": int(len(fields)),
            "fields_per_well": sorted({int(v) for v in fields}),
            "planes": sorted({int(v) for v in planes}),
            "channels": list(self.channel_names),
            "images": int(len(p)),
            "pixel_size_um": self.pixel_size,
            "z_step_um": self.z_step,
        }


def plane_frame(rows: list[dict]) -> pd.DataFrame:
    """A plane table from row dicts, with the columns' types."""
    frame = pd.DataFrame(rows, columns=PLANE_COLUMNS)
    frame["site"] = frame["site"].astype(int)
    frame["plane"] = frame["plane"].astype(int)
    frame["frame"] = frame["frame"].fillna(0).astype(int)
    frame["z"] = frame["z"].astype(float)
    return frame


def _plane_name(row) -> str:
    return f"well {row.well} field {row.site} plane {row.plane} channel {row.channel!r}"


def select_sites(table: PlaneTable, sites: Sequence[Site], settings: ImageSettings) -> pd.DataFrame:
    """The planes of the sample sheet's ``sites``, checked, with configured channel names.

    Every site must be in the export with every configured channel (matched by name through
    ``images.channel_names``), each (well, field, plane, channel) once, the same planes in
    every channel and the same number of planes in every site, every file present; the
    export's pixel size and z step must agree with ``voxel_size``.

    Returns
    -------
    :data:`SITE_PLANE_COLUMNS`, one row per plane of every site and configured channel,
    sorted by site, z, channel order.

    Raises
    ------
    InputError: naming the source, the site, and the plane, channel or file at fault.
    """
    source = table.source
    planes = table.planes
    order = channel_order(table.channel_names, settings, source)
    wanted = {table.channel_names[i]: channel for i, channel in zip(order, settings.channels)}
    check_voxel_size((table.z_step, table.pixel_size, table.pixel_size), settings, source)
    plates = set(planes["plate"].dropna())
    by_site = planes.groupby(["well", "site"] if len(plates) <= 1 else ["plate", "well", "site"], sort=False)
    groups = dict(iter(by_site))
    out, n_planes = [], None
    for site in sites:
        key = (site.well, site.site) if len(plates) <= 1 else (site.plate, site.well, site.site)
        rows = groups.get(key)
        if rows is None:
            wells = sorted(set(planes["well"]))
            fields = sorted(set(planes.loc[planes["well"] == site.well, "site"]))
            held = f"well {site.well} has fields {fields}" if fields else f"it has wells {wells[:12]}"
            if len(plates) > 1:
                held += f"; plates {sorted(plates)}"
            raise InputError(f"{source}: sheet site {site.name} is not in the export ({held})")
        rows = rows[rows["channel"].isin(wanted)]
        twice = rows[rows.duplicated(["plane", "channel"], keep=False)].sort_values(["plane", "channel"])
        if len(twice):
            first = twice.iloc[0]
            files = ", ".join(
                twice.loc[(twice.plane == first.plane) & (twice.channel == first.channel), "path"]
            )
            raise InputError(f"{source}: {site.name}: {_plane_name(first)} is listed twice ({files})")
        per_channel = {name: set(rows.loc[rows["channel"] == name, "plane"]) for name in wanted}
        all_planes = set().union(*per_channel.values())
        for name, have in per_channel.items():
            if not have:
                raise InputError(
                    f"{source}: {site.name}: no image of channel {name!r} (configured as {wanted[name]!r})"
                )
            missing = sorted(all_planes - have)
            if missing:
                raise InputError(
                    f"{source}: {site.name}: channel {name!r} lacks plane(s) {missing} that other "
                    f"channels have ({len(have)} of {len(all_planes)} planes)"
                )
        if n_planes is None:
            n_planes, first_site = len(all_planes), site
        elif len(all_planes) != n_planes:
            raise InputError(
                f"{source}: {site.name} has {len(all_planes)} planes, {first_site.name} has "
                f"{n_planes}: every field of a screen needs the same number of planes"
            )
        z_index = {plane: k for k, plane in enumerate(sorted(all_planes))}
        out.append(
            pd.DataFrame(
                {
                    "plate": site.plate,
                    "well": site.well,
                    "site": site.site,
                    "z": rows["plane"].map(z_index).to_numpy(),
                    "channel": rows["channel"].map(wanted).to_numpy(),
                    "path": rows["path"].to_numpy(),
                    "frame": rows["frame"].to_numpy(),
                }
            )
        )
    selected = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=SITE_PLANE_COLUMNS)
    missing = [p for p in dict.fromkeys(selected["path"]) if not Path(p).is_file()]
    if missing:
        raise InputError(
            f"{source}: {len(missing)} image file(s) it lists do not exist, e.g. {missing[0]}"
            + (f" and {missing[1]}" if len(missing) > 1 else "")
        )
    rank = {channel: i for i, channel in enumerate(settings.channels)}
    return selected.sort_values(
        ["plate", "well", "site", "z", "channel"], key=lambda c: c.map(rank) if c.name == "channel" else c
    ).reset_index(drop=True)[SITE_PLANE_COLUMNS]


def stack_planes(rows: pd.DataFrame, channels: Sequence[str], where: str) -> np.ndarray:
    """Read one site's planes (:data:`SITE_PLANE_COLUMNS` rows) into a ``(Z, C, Y, X)`` array
    in ``channels`` order; each plane is decoded straight into its place."""
    if rows.empty:
        raise InputError(f"{where}: no planes")
    rank = {channel: i for i, channel in enumerate(channels)}
    n_z = int(rows["z"].max()) + 1
    if len(rows) != n_z * len(channels) or set(rows["channel"]) != set(channels):
        raise InputError(
            f"{where}: {len(rows)} planes listed for {n_z} z x {len(channels)} channels "
            f"({sorted(set(rows['channel']))} vs {list(channels)})"
        )
    first = rows.iloc[0]
    plane = read_plane(first.path, int(first.frame))
    stack = np.empty((n_z, len(channels), *plane.shape), plane.dtype)
    for row in rows.itertuples(index=False):
        dst = stack[int(row.z), rank[row.channel]]
        if row.path == first.path and row.frame == first.frame:
            dst[...] = plane
        else:
            read_plane(row.path, int(row.frame), out=dst)
    return stack


class PlaneTableReader(SiteReader):
    """Per-plane layouts: sites read from their plate's index (the planes
    :func:`select_sites` kept, as the ``index_images`` rule writes them)."""

    def __init__(self, settings: ImageSettings, planes: pd.DataFrame) -> None:
        super().__init__(settings)
        self._sites = dict(iter(planes.groupby(["plate", "well", "site"], sort=False)))

    @classmethod
    def from_index(cls, settings: ImageSettings, index: Sequence[str | Path]) -> "PlaneTableReader":
        """From the index files of one or more plates."""
        return cls(settings, pd.concat([pd.read_parquet(p) for p in index], ignore_index=True))

    def read(self, site: Site) -> np.ndarray:
        rows = self._sites.get((site.plate, site.well, site.site))
        if rows is None:
            raise InputError(f"{site.name}: not in the plate's image index")
        return check_zstack(stack_planes(rows, self.settings.channels, site.name), site.name)
