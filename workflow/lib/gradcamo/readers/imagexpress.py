"""ImageXpress exports (Molecular Devices MetaXpress and HCS.ai): one 2D TIFF per well, site,
wavelength and plane.

MetaXpress writes ``<plate>/.../TimePoint_1/[ZStep_<n>/]<name>_<well>_s<site>_w<wave>[<GUID>].tif``
(a single site or wavelength drops its ``_s``/``_w``; ``_thumb`` files are previews) and a
``<plate>.HTD`` whose ``"WaveName<n>"`` lines name the wavelengths. HCS.ai names the plane in
the file: ``<name>_t<t>_<well>_s<site>_w<wave>_z<z>.tif``. Where ``ZStep_<n>`` folders exist,
files outside them (MetaXpress' projections) are not planes. Channels are named by the HTD's
``WaveName``, or ``w<n>`` without an HTD.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gradcamo.errors import InputError
from gradcamo.readers.planes import PlaneTable, plane_frame
from gradcamo.wells import canonical_well

_NAME = re.compile(
    r"_(?P<well>[A-Za-z]{1,2}\d{1,3})(?:_s(?P<site>\d+))?(?:_w(?P<wave>\d+))?(?:_z(?P<z>\d+))?"
    r"(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?\.tiff?$",
    re.IGNORECASE,
)
_ZSTEP = re.compile(r"^ZStep_(\d+)$", re.IGNORECASE)
_TIMEPOINT = re.compile(r"^TimePoint_(\d+)$", re.IGNORECASE)


def read_htd(path: str | os.PathLike) -> dict[str, str]:
    """The ``"Key", value`` lines of a MetaXpress ``.HTD`` file (values unquoted)."""
    entries = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        key, _, value = line.partition(",")
        entries[key.strip().strip('"')] = value.strip().strip('"')
    return entries


def imagexpress_planes(source: str | os.PathLike) -> PlaneTable:
    """Every plane of an ImageXpress plate folder (or its ``.HTD`` file's folder).

    Raises
    ------
    InputError: no plane image under the folder, or more than one time point.
    """
    source = Path(source)
    folder = source.parent if source.is_file() else source
    if not folder.is_dir():
        raise InputError(f"{source}: ImageXpress plate folder does not exist")
    htds = [source] if source.is_file() else sorted(folder.glob("*.[Hh][Tt][Dd]"))
    htd = read_htd(htds[0]) if htds else {}
    files = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in (".tif", ".tiff")]
    files = [p for p in files if "_thumb" not in p.name.lower()]
    zsteps = any(_ZSTEP.match(p.parent.name) for p in files)
    rows, timepoints = [], set()
    for path in files:
        match = _NAME.search(path.name)
        if not match:
            continue
        parts = path.relative_to(folder).parts[:-1]
        timepoints |= {int(m.group(1)) for m in map(_TIMEPOINT.match, parts) if m}
        zstep = _ZSTEP.match(path.parent.name)
        if zsteps and not zstep:
            continue  # beside ZStep_<n> folders: a projection, not a plane
        plane = int(zstep.group(1)) if zstep else int(match.group("z") or 1)
        wave = int(match.group("wave") or 1)
        rows.append(
            {
                "plate": htds[0].stem if htds else folder.name,
                "well": canonical_well(match.group("well")),
                "site": int(match.group("site") or 1),
                "plane": plane,
                "channel": htd.get(f"WaveName{wave}") or f"w{wave}",
                "path": str(path),
                "frame": 0,
                "z": float("nan"),
            }
        )
    if not rows:
        raise InputError(
            f"{source}: no ImageXpress plane image (<name>_<well>_s<site>_w<wave>.tif) under this folder"
        )
    if len(timepoints) > 1:
        raise InputError(
            f"{source}: has {len(timepoints)} TimePoint_<n> folders; gradcamo reads one per site"
        )
    planes = plane_frame(rows)
    waves = sorted({int(m.group("wave") or 1) for m in (_NAME.search(Path(p).name) for p in planes.path)})
    names = [htd.get(f"WaveName{w}") or f"w{w}" for w in waves]
    return PlaneTable(planes, str(source), None, names)
