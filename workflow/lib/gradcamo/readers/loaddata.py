"""CellProfiler LoadData CSVs (the JUMP and Cell Painting Gallery convention): one row per
2D image set, per channel ``FileName_<Ch>`` + ``PathName_<Ch>`` (or ``URL_<Ch>``) and
optionally ``Frame_<Ch>``, with ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``.

CellProfiler itself loads 2D image sets; stacking the rows of a site by plane into a z-stack
is this workflow's extension. The plane is numbered by ``Metadata_PlaneID`` (pe2loaddata
writes it) or a column the configuration names (``images.loaddata.z_column``); without one,
each site has one plane. Relative paths are relative to the CSV's folder; ``images.path_map``
rewrites where the CSV was written to where the files are now.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from gradcamo.errors import InputError
from gradcamo.readers.base import map_path
from gradcamo.readers.planes import PlaneTable, plane_frame
from gradcamo.wells import canonical_well

#: The plane column pe2loaddata writes.
DEFAULT_Z_COLUMN = "Metadata_PlaneID"
_SITE_COLUMNS = ("Metadata_Plate", "Metadata_Well", "Metadata_Site")


def loaddata_channels(columns) -> list[str]:
    """The channels a LoadData CSV names (``FileName_<Ch>`` or ``URL_<Ch>``), in column order."""
    names = []
    for column in columns:
        for prefix in ("FileName_", "URL_"):
            if column.startswith(prefix) and column[len(prefix) :] not in names:
                names.append(column[len(prefix) :])
    return names


def _path(row: pd.Series, channel: str, folder: Path, path_map: dict | None, csv: Path, line: int) -> str:
    url = row.get(f"URL_{channel}")
    if isinstance(url, str) and url:
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file"):
            raise InputError(
                f"{csv} line {line}: URL_{channel} is {url!r}; gradcamo reads local files: copy "
                "the images to disk and point images.path_map at them"
            )
        name = unquote(parsed.path)
    else:
        file_name, path_name = row.get(f"FileName_{channel}"), row.get(f"PathName_{channel}")
        if not isinstance(file_name, str) or not file_name:
            raise InputError(f"{csv} line {line}: FileName_{channel} is empty")
        base = path_name if isinstance(path_name, str) else ""
        name = base.rstrip("/\\") + "/" + file_name if base else file_name
    name = map_path(name, path_map)
    path = Path(name)
    return str(path if path.is_absolute() else folder / path)


def loaddata_planes(
    source: str | os.PathLike, z_column: str | None = None, path_map: dict | None = None
) -> PlaneTable:
    """Every image a LoadData CSV lists (:class:`PlaneTable`).

    Raises
    ------
    InputError: an unreadable CSV, a missing ``Metadata_Plate/Well/Site`` column, a missing
        plane column, or no channel column -- naming the file and column.
    """
    csv = Path(source)
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{csv}: LoadData CSV does not exist") from None
    except Exception as exc:
        raise InputError(f"{csv}: cannot read as a LoadData CSV ({exc})") from None
    missing = [c for c in _SITE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{csv}: missing column(s) {', '.join(missing)}")
    channels = loaddata_channels(table.columns)
    if not channels:
        raise InputError(f"{csv}: no FileName_<channel> or URL_<channel> column")
    if z_column is not None and z_column not in table.columns:
        raise InputError(
            f"{csv}: config key 'images.loaddata.z_column' names {z_column!r}, which is not a "
            f"column (columns with 'Plane' or 'Z': "
            f"{[c for c in table.columns if 'plane' in c.lower() or 'z' in c.lower()][:8]})"
        )
    z_column = z_column or (DEFAULT_Z_COLUMN if DEFAULT_Z_COLUMN in table.columns else None)
    folder = csv.parent
    rows = []
    for i, row in table.iterrows():
        line = i + 2
        try:
            site = int(float(row["Metadata_Site"]))
            plane = int(float(row[z_column])) if z_column else 1
        except ValueError:
            raise InputError(
                f"{csv} line {line}: Metadata_Site {row['Metadata_Site']!r} or "
                f"{z_column} {row.get(z_column)!r} is not a number"
            ) from None
        for channel in channels:
            if not row.get(f"FileName_{channel}") and not row.get(f"URL_{channel}"):
                continue  # a channel this image set lacks: shows as a missing plane, named
            frame = row.get(f"Frame_{channel}")
            z = row.get(f"Metadata_PositionZ_{channel}", row.get("Metadata_PositionZ"))
            rows.append(
                {
                    "plate": row["Metadata_Plate"],
                    "well": canonical_well(row["Metadata_Well"]),
                    "site": site,
                    "plane": plane,
                    "channel": channel,
                    "path": _path(row, channel, folder, path_map, csv, line),
                    "frame": int(float(frame)) if frame not in (None, "") else 0,
                    # pe2loaddata's positions are metres, as Harmony writes them.
                    "z": float(z) * 1e6 if z not in (None, "") else float("nan"),
                }
            )
    resolution = table.get("Metadata_ImageResolutionX")
    sizes = {float(v) * 1e6 for v in resolution if v} if resolution is not None else set()
    return PlaneTable(plane_frame(rows), str(csv), sizes.pop() if len(sizes) == 1 else None, channels)
