"""Opera Phenix / Operetta exports (Revvity Harmony): one 2D TIFF per well, field, plane and
channel (``r01c01f01p01-ch1sk1fk1fl1.tiff``), listed in ``Index.idx.xml`` (Harmony 5 and 6)
or ``Index.xml`` (Harmony 7).

The index is the export's truth: wells (``Row``/``Col``), fields (``FieldID``), planes
(``PlaneID``, ``PositionZ``), channels (``ChannelID`` and ``ChannelName``: per image in
Harmony 5/6, per channel under ``Maps`` in Harmony 7) and the pixel size
(``ImageResolutionX``, metres). Channel numbers are not stain order (in a real Broad plate
ch5 is Hoechst and ch1 Alexa 647), so channels are matched by ``ChannelName``. The index is
read incrementally: a screen plate's index lists hundreds of thousands of images.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from gradcamo.errors import InputError
from gradcamo.readers.base import map_path
from gradcamo.readers.planes import PlaneTable, plane_frame
from gradcamo.wells import well_name

#: The index file names Harmony writes, newest first.
INDEX_NAMES = ("Index.xml", "Index.idx.xml")


def _local(tag: str) -> str:
    """An element's tag without its namespace (Harmony 5 and 7 use different ones)."""
    return tag.rsplit("}", 1)[-1]


def _fields(element: ET.Element) -> dict[str, str]:
    return {_local(child.tag): (child.text or "").strip() for child in element}


def find_index(source: str | os.PathLike) -> Path:
    """The index file of an export: ``source`` itself, or the index inside that folder."""
    source = Path(source)
    if source.is_file():
        return source
    for name in INDEX_NAMES:
        for candidate in (source / name, source / "Images" / name):
            if candidate.is_file():
                return candidate
    raise InputError(f"{source}: no Harmony index ({' or '.join(INDEX_NAMES)}) here or in Images/")


def harmony_planes(source: str | os.PathLike, path_map: dict | None = None) -> PlaneTable:
    """Every image a Harmony export's index lists (:class:`PlaneTable`).

    Image URLs are relative to the index's folder (a URL naming a subfolder that is not
    there is looked up by its file name beside the index, as exports are often flattened).

    Raises
    ------
    InputError: not a Harmony index, more than one time point, or an image without
        channel name -- naming the file.
    """
    index = find_index(source)
    folder = index.parent
    plate, images, channel_info = None, [], {}
    try:
        for _, element in ET.iterparse(index, events=("end",)):
            tag = _local(element.tag)
            if tag == "PlateID" and plate is None:
                plate = (element.text or "").strip() or None
            elif tag == "Image" and len(element):
                images.append(_fields(element))
                element.clear()
            elif tag == "Entry" and element.get("ChannelID") is not None:
                info = _fields(element)
                if "ChannelName" in info or "ImageResolutionX" in info:
                    channel_info[element.get("ChannelID")] = info
                element.clear()
    except ET.ParseError as exc:
        raise InputError(f"{index}: not a readable Harmony index (XML: {exc})") from None
    if not images:
        raise InputError(f"{index}: lists no images (is it a Harmony Index.xml / Index.idx.xml?)")
    timepoints = {image.get("TimepointID") for image in images}
    if len(timepoints) > 1:
        raise InputError(f"{index}: has {len(timepoints)} time points; gradcamo reads one per site")
    rows, names, resolution = [], {}, set()
    flat = None
    for image in images:
        if image.get("State", "Ok") != "Ok":
            continue  # a failed acquisition: its plane shows as missing, named
        info = {**channel_info.get(image.get("ChannelID"), {}), **image}
        name = info.get("ChannelName")
        if not name:
            raise InputError(f"{index}: image {image.get('URL')} has no ChannelName")
        names.setdefault(name, int(info.get("ChannelID", 0) or 0))
        if info.get("ImageResolutionX"):
            resolution.add(float(info["ImageResolutionX"]) * 1e6)
        url = image["URL"]
        if path_map:
            url = map_path(url, path_map)
        path = Path(url) if Path(url).is_absolute() else folder / url
        if flat is None:  # one look decides whether the export keeps the URLs' folders
            flat = not path.exists() and (folder / Path(url).name).exists()
        if flat:
            path = folder / Path(url).name
        z = image.get("PositionZ")
        rows.append(
            {
                "plate": plate,
                "well": well_name(int(image["Row"]), int(image["Col"])),
                "site": int(image["FieldID"]),
                "plane": int(image["PlaneID"]),
                "channel": name,
                "path": str(path),
                "frame": 0,
                "z": float(z) * 1e6 if z not in (None, "") else float("nan"),
            }
        )
    pixel = sorted(resolution)[0] if len(resolution) == 1 else None
    return PlaneTable(plane_frame(rows), str(index), pixel, sorted(names, key=names.get))
