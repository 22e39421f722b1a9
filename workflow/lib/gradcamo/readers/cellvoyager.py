"""Yokogawa CellVoyager exports (CV7000, CV8000, CQ1): one 2D TIFF per well, field, plane and
channel (``<plate>_<well>_T0001F001L01A01Z01C01.tif``), listed in ``MeasurementData.mlf``.

Each ``MeasurementRecord`` of type ``IMG`` gives ``Row``, ``Column``, ``FieldIndex``,
``ZIndex``, ``TimePoint``, ``Ch``, the stage ``Z`` (µm) and the file name; ``ERR`` records are
failed acquisitions (their planes show as missing, named). ``MeasurementDetail.mrf`` gives the
pixel size per channel and the plate's name; the measurement settings (``.mes``) it names give
each channel's ``Target``, used as the channel's name. Without them, channels are named
``C01``, ``C02``, ... as in the file names.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from gradcamo.errors import InputError
from gradcamo.readers.base import map_path
from gradcamo.readers.planes import PlaneTable, plane_frame
from gradcamo.wells import well_name


def _attrs(element: ET.Element) -> dict[str, str]:
    """An element's attributes without their namespace (``bts:Row`` -> ``Row``)."""
    return {key.rsplit("}", 1)[-1]: value for key, value in element.attrib.items()}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _detail(folder: Path) -> tuple[dict, dict[int, dict]]:
    """The measurement detail's attributes and its channels (by number), if present."""
    mrf = folder / "MeasurementDetail.mrf"
    if not mrf.is_file():
        return {}, {}
    root = ET.parse(mrf).getroot()
    channels = {int(_attrs(e)["Ch"]): _attrs(e) for e in root.iter() if _local(e.tag) == "MeasurementChannel"}
    plates = [_attrs(e) for e in root.iter() if _local(e.tag) == "MeasurementSamplePlate"]
    detail = _attrs(root)
    if plates:
        detail["PlateName"] = plates[0].get("Name", "")
    return detail, channels


def _targets(folder: Path, detail: dict) -> dict[int, str]:
    """Channel number -> ``Target`` from the measurement settings (``.mes``), if present."""
    mes = folder / detail.get("MeasurementSettingFileName", "")
    if not detail.get("MeasurementSettingFileName") or not mes.is_file():
        return {}
    root = ET.parse(mes).getroot()
    return {
        int(_attrs(e)["Ch"]): _attrs(e).get("Target", "")
        for e in root.iter()
        if _local(e.tag) == "Channel" and "Ch" in _attrs(e)
    }


def cellvoyager_planes(source: str | os.PathLike, path_map: dict | None = None) -> PlaneTable:
    """Every image a CellVoyager ``MeasurementData.mlf`` (or its folder) lists.

    Raises
    ------
    InputError: no ``.mlf``, an unreadable one, no image record, or more than one time point.
    """
    source = Path(source)
    mlf = source if source.is_file() else source / "MeasurementData.mlf"
    if not mlf.is_file():
        raise InputError(f"{source}: no CellVoyager MeasurementData.mlf")
    folder = mlf.parent
    try:
        detail, channels = _detail(folder)
        targets = _targets(folder, detail)
        records = [
            (_attrs(e), (e.text or "").strip())
            for e in ET.parse(mlf).getroot().iter()
            if _local(e.tag) == "MeasurementRecord"
        ]
    except ET.ParseError as exc:
        raise InputError(f"{folder}: unreadable CellVoyager metadata (XML: {exc})") from None
    images = [(a, name) for a, name in records if a.get("Type") == "IMG"]
    if not images:
        raise InputError(f"{mlf}: lists no image (MeasurementRecord of type IMG)")
    timepoints = {a.get("TimePoint") for a, _ in images}
    if len(timepoints) > 1:
        raise InputError(f"{mlf}: has {len(timepoints)} time points; gradcamo reads one per site")
    used = sorted({int(a["Ch"]) for a, _ in images})
    named = [targets.get(ch) for ch in used]
    if not all(named) or len(set(named)) < len(named):
        named = [f"C{ch:02d}" for ch in used]  # the file names' own spelling
    name_of = dict(zip(used, named))
    plate = detail.get("PlateName") or detail.get("Title") or folder.name
    rows = []
    for a, name in images:
        path = Path(map_path(name, path_map))
        rows.append(
            {
                "plate": plate,
                "well": well_name(int(a["Row"]), int(a["Column"])),
                "site": int(a["FieldIndex"]),
                "plane": int(a.get("ZIndex", 1)),
                "channel": name_of[int(a["Ch"])],
                "path": str(path if path.is_absolute() else folder / path),
                "frame": 0,
                "z": float(a["Z"]) if a.get("Z") not in (None, "") else float("nan"),
            }
        )
    sizes = {float(channels[ch]["HorizontalPixelDimension"]) for ch in used if ch in channels}
    return PlaneTable(plane_frame(rows), str(mlf), sizes.pop() if len(sizes) == 1 else None, named)
