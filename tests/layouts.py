"""Test helper: a dataset (the mini dataset) exported into the layouts real screens come in.

Each writer takes the sheet rows of OME-TIFF sites (``plate, well, site, image``) and writes
the same pixels the way an instrument or converter would: Opera Phenix/Operetta per-plane
TIFFs with their Harmony index (channel numbers not in stain order, as on a real Broad plate),
a LoadData CSV over those planes (as pe2loaddata writes it), one ZYX file per channel,
OME-Zarr HCS plates (NGFF 0.4 and 0.5), ImageXpress plate folders, CellVoyager exports, and
files of a free naming for layout ``pattern``. The reader of each must give back the OME-TIFF's
arrays bit for bit.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import tifffile
from gradcamo.readers import ImageSettings, Site
from gradcamo.readers.tiff import read_zstack

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
VOXEL_SIZE = (1.0, 0.65, 0.65)
#: Harmony channel IDs and names of a real Broad plate (pe2loaddata's Version1 index): ch5 is
#: Hoechst, ch1 Alexa 647; channel number is not stain order.
HARMONY = {
    "DNA": (5, "HOECHST 33342"),
    "ER": (4, "Alexa 488"),
    "RNA": (3, "488 long"),
    "AGP": (2, "Alexa 568"),
    "Mito": (1, "Alexa 647"),
}
#: The export's names of the configured channels, per layout (config key images.channel_names).
CHANNEL_NAMES = {
    "harmony": {c: name for c, (_, name) in HARMONY.items()},
    "loaddata": {c: f"Orig{c}" for c in CHANNELS},
    "imagexpress": {"DNA": "DAPI", "ER": "FITC", "RNA": "FITC-long", "AGP": "TRITC", "Mito": "Cy5"},
    "cellvoyager": {"DNA": "405", "ER": "488", "RNA": "488L", "AGP": "561", "Mito": "640"},
}


def settings(layout: str = "tiff", **changes) -> ImageSettings:
    """The mini dataset's image settings for ``layout``."""
    values = dict(
        channels=CHANNELS,
        layout=layout,
        page_order=None,
        channel_names=CHANNEL_NAMES.get(layout, {}),
        voxel_size=VOXEL_SIZE,
        voxel_size_tolerance=0.02,
        pattern={},
        z_column=None,
        path_map={},
    )
    values.update(changes)
    return ImageSettings(**values)


def read_sites(rows: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """(plate, well, site) -> ZCYX of every OME-TIFF site of ``rows``."""
    return {(r.plate, r.well, r.site): read_zstack(r.image, settings()) for r in rows.itertuples()}


def _row_col(well: str) -> tuple[int, int]:
    return ord(well[0]) - ord("A") + 1, int(well[1:])


def _write_plane(path: Path, plane: np.ndarray, compression: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, plane, compression=compression)


def export_harmony(
    stacks: dict, out: Path, version: int = 5, compression: str | None = "lzw"
) -> dict[str, Path]:
    """One Harmony export per plate: ``<out>/<plate>/Images/`` planes and index. Returns
    plate -> index file (``Index.idx.xml`` for Harmony 5, ``Index.xml`` with channel names
    under ``Maps`` for Harmony 7)."""
    indexes = {}
    for plate in sorted({key[0] for key in stacks}):
        folder = out / plate / "Images"
        images, wells = [], {}
        for (p, well, site), zcyx in sorted(stacks.items()):
            if p != plate:
                continue
            row, col = _row_col(well)
            for z in range(zcyx.shape[0]):
                for c, channel in enumerate(CHANNELS):
                    ch, name = HARMONY[channel]
                    url = f"r{row:02d}c{col:02d}f{site:02d}p{z + 1:02d}-ch{ch}sk1fk1fl1.tiff"
                    _write_plane(folder / url, zcyx[z, c], compression)
                    image_id = f"{row:02d}{col:02d}K1F{site}P{z + 1}R{ch}"
                    wells.setdefault((row, col), []).append(image_id)
                    per_image = (
                        f"<ChannelName>{name}</ChannelName>"
                        f'<ImageResolutionX Unit="m">{VOXEL_SIZE[2] * 1e-6!r}</ImageResolutionX>'
                        if version < 7
                        else ""
                    )
                    images.append(
                        f'<Image Version="1"><id>{image_id}</id><State>Ok</State><URL>{url}</URL>'
                        f"<Row>{row}</Row><Col>{col}</Col><FieldID>{site}</FieldID><PlaneID>{z + 1}</PlaneID>"
                        f"<TimepointID>0</TimepointID><ChannelID>{ch}</ChannelID>{per_image}"
                        f'<PositionZ Unit="m">{(z * VOXEL_SIZE[0] - 3.0) * 1e-6!r}</PositionZ></Image>'
                    )
        entries = (
            "".join(
                f'<Entry ChannelID="{ch}"><ChannelName>{name}</ChannelName>'
                f'<ImageResolutionX Unit="m">{VOXEL_SIZE[2] * 1e-6!r}</ImageResolutionX></Entry>'
                for ch, name in HARMONY.values()
            )
            if version >= 7
            else ""
        )
        namespace = (
            "43B2A954-E3C3-47E1-B392-6635266B0DD3/HarmonyV7"
            if version >= 7
            else "http://www.perkinelmer.com/PEHH/HarmonyV5"
        )
        well_xml = "".join(
            f"<Well><id>{r:02d}{c:02d}</id><Row>{r}</Row><Col>{c}</Col>"
            + "".join(f'<Image id="{i}" />' for i in ids)
            + "</Well>"
            for (r, c), ids in sorted(wells.items())
        )
        index = folder / ("Index.xml" if version >= 7 else "Index.idx.xml")
        index.write_text(
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<EvaluationInputData Version="1" xmlns="{namespace}"><InstrumentType>Phenix</InstrumentType>'
            f"<Plates><Plate><PlateID>{plate}</PlateID></Plate></Plates><Wells>{well_xml}</Wells>"
            f"<Maps><Map>{entries}</Map></Maps><Images>{''.join(images)}</Images></EvaluationInputData>",
            encoding="utf-8-sig",
        )
        indexes[plate] = index
    return indexes


def export_loaddata(stacks: dict, harmony_indexes: dict[str, Path], out: Path) -> Path:
    """A LoadData CSV (pe2loaddata's columns) over Harmony exports' planes: one row per
    (plate, well, field, plane), ``PathName`` relative to the CSV."""
    rows = []
    for (plate, well, site), zcyx in sorted(stacks.items()):
        folder = harmony_indexes[plate].parent
        row, col = _row_col(well)
        for z in range(zcyx.shape[0]):
            entry = {}
            for channel in CHANNELS:
                ch, _ = HARMONY[channel]
                entry[f"FileName_Orig{channel}"] = (
                    f"r{row:02d}c{col:02d}f{site:02d}p{z + 1:02d}-ch{ch}sk1fk1fl1.tiff"
                )
                entry[f"PathName_Orig{channel}"] = folder.relative_to(out).as_posix()
            entry.update(Metadata_Plate=plate, Metadata_Well=well, Metadata_Site=site, Metadata_PlaneID=z + 1)
            rows.append(entry)
    path = out / "load_data.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def export_channel_files(stacks: dict, out: Path) -> pd.DataFrame:
    """One ZYX ImageJ TIFF per channel per field (``<plate>/<well>_<site>/<well>_<site>_<ch>.tif``);
    returns sheet rows with ``image_<channel>`` columns."""
    rows = []
    for (plate, well, site), zcyx in sorted(stacks.items()):
        entry = {"plate": plate, "well": well, "site": site}
        for c, channel in enumerate(CHANNELS):
            path = out / plate / f"{well}_{site}" / f"{well}_{site}_{channel}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(
                path,
                zcyx[:, c],
                imagej=True,
                resolution=(1 / VOXEL_SIZE[2], 1 / VOXEL_SIZE[1]),
                metadata={"axes": "ZYX", "spacing": VOXEL_SIZE[0], "unit": "um"},
            )
            entry[f"image_{channel}"] = str(path)
        rows.append(entry)
    return pd.DataFrame(rows)


def _omero_channel(label: str) -> dict:
    """An ``omero`` channel as NGFF's schema has it (colour and display window required)."""
    return {
        "label": label,
        "color": "FFFFFF",
        "active": True,
        "window": {"min": 0, "max": 65535, "start": 0, "end": 65535},
    }


def export_ome_zarr(stacks: dict, out: Path, version: str = "0.4") -> dict[str, Path]:
    """One OME-Zarr HCS plate per plate (NGFF ``version`` 0.4 or 0.5), channel labels and
    micrometre scales set. Returns plate -> ``.zarr`` folder."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    fmt = FormatV04() if version == "0.4" else FormatV05()
    plates = {}
    for plate in sorted({key[0] for key in stacks}):
        path = out / f"{plate}.zarr"
        root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
        keys = sorted(k for k in stacks if k[0] == plate)
        wells = sorted({k[1] for k in keys})
        rows, cols = sorted({w[0] for w in wells}), sorted({str(int(w[1:])) for w in wells})
        write_plate_metadata(root, rows, cols, [f"{w[0]}/{int(w[1:])}" for w in wells], fmt=fmt, name=plate)
        for well in wells:
            group = root.require_group(well[0]).require_group(str(int(well[1:])))
            sites = [k for k in keys if k[1] == well]
            write_well_metadata(group, [{"path": str(i)} for i in range(len(sites))], fmt=fmt)
            for i, key in enumerate(sites):
                write_image(
                    stacks[key].transpose(1, 0, 2, 3),
                    group.require_group(str(i)),
                    scale_factors=(),
                    fmt=fmt,
                    axes="czyx",
                    scale={"c": 1.0, **dict(zip("zyx", VOXEL_SIZE))},
                    axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
                    omero={"channels": [_omero_channel(c) for c in CHANNELS]},
                )
        plates[plate] = path
    return plates


def export_imagexpress(stacks: dict, out: Path) -> dict[str, Path]:
    """MetaXpress plate folders: ``<plate>/TimePoint_1/ZStep_<z>/<plate>_<well>_s<site>_w<n><GUID>.tif``,
    a projection beside the ZStep folders (not a plane) and the ``.HTD`` naming the
    wavelengths. Returns plate -> folder."""
    names = CHANNEL_NAMES["imagexpress"]
    folders = {}
    for plate in sorted({key[0] for key in stacks}):
        folder = out / plate
        for (p, well, site), zcyx in sorted(stacks.items()):
            if p != plate:
                continue
            for c in range(len(CHANNELS)):
                guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{plate}{well}{site}{c}")).upper()
                stem = f"{plate}_{well}_s{site}_w{c + 1}{guid}.tif"
                for z in range(zcyx.shape[0]):
                    _write_plane(folder / "TimePoint_1" / f"ZStep_{z + 1}" / stem, zcyx[z, c], None)
                _write_plane(folder / "TimePoint_1" / stem, zcyx[:, c].max(0), None)
        lines = ['"HTSInfoFile", Version 1.0', f'"NWavelengths", {len(CHANNELS)}']
        lines += [f'"WaveName{c + 1}", "{names[ch]}"' for c, ch in enumerate(CHANNELS)]
        (folder / f"{plate}.HTD").write_text("\n".join([*lines, '"EndFile"']) + "\n")
        folders[plate] = folder
    return folders


def export_cellvoyager(stacks: dict, out: Path) -> dict[str, Path]:
    """CellVoyager exports: ``<plate>_<well>_T0001F<f>L01A01Z<z>C<c>.tif``,
    ``MeasurementData.mlf``, ``MeasurementDetail.mrf`` and the ``.mes`` naming the channels'
    targets. Returns plate -> ``.mlf``."""
    ns = 'xmlns:bts="http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"'
    names = CHANNEL_NAMES["cellvoyager"]
    mlfs = {}
    for plate in sorted({key[0] for key in stacks}):
        folder = out / plate
        records = []
        for (p, well, site), zcyx in sorted(stacks.items()):
            if p != plate:
                continue
            row, col = _row_col(well)
            for c in range(len(CHANNELS)):
                for z in range(zcyx.shape[0]):
                    name = f"{plate}_{well}_T0001F{site:03d}L01A01Z{z + 1:02d}C{c + 1:02d}.tif"
                    _write_plane(folder / name, zcyx[z, c], "zlib")
                    records.append(
                        f'<bts:MeasurementRecord bts:Type="IMG" bts:Column="{col}" bts:Row="{row}" '
                        f'bts:TimePoint="1" bts:FieldIndex="{site}" bts:ZIndex="{z + 1}" '
                        f'bts:Z="{z * VOXEL_SIZE[0]}" bts:Ch="{c + 1}">{name}</bts:MeasurementRecord>'
                    )
        (folder / "MeasurementData.mlf").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<bts:MeasurementData {ns}>'
            f"{''.join(records)}</bts:MeasurementData>"
        )
        channels = "".join(
            f'<bts:MeasurementChannel bts:Ch="{c + 1}" bts:HorizontalPixelDimension="{VOXEL_SIZE[2]}" '
            f'bts:VerticalPixelDimension="{VOXEL_SIZE[1]}" />'
            for c in range(len(CHANNELS))
        )
        (folder / "MeasurementDetail.mrf").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<bts:MeasurementDetail {ns} bts:Title="{plate}" '
            f'bts:MeasurementSettingFileName="settings.mes"><bts:MeasurementSamplePlate bts:Name="{plate}" />'
            f"{channels}</bts:MeasurementDetail>"
        )
        targets = "".join(
            f'<bts:Channel bts:Ch="{c + 1}" bts:Target="{names[ch]}" />' for c, ch in enumerate(CHANNELS)
        )
        (folder / "settings.mes").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<bts:MeasurementSetting {ns}><bts:ChannelList>{targets}'
            "</bts:ChannelList></bts:MeasurementSetting>"
        )
        mlfs[plate] = folder / "MeasurementData.mlf"
    return mlfs


#: A free naming for layout ``pattern``: ``<well>/field<site>/<channel>_z<plane>.tif``.
PATTERN = {
    "glob": "*/field*/*.tif",
    "regex": r"(?P<well>[A-Z]\d\d)/field(?P<site>\d+)/(?P<channel>\w+)_z(?P<plane>\d+)\.tif$",
}


def export_pattern(stacks: dict, out: Path) -> dict[str, Path]:
    """Per-plane files named by :data:`PATTERN`, one folder per plate."""
    folders = {}
    for (plate, well, site), zcyx in sorted(stacks.items()):
        for z in range(zcyx.shape[0]):
            for c, channel in enumerate(CHANNELS):
                _write_plane(
                    out / plate / well / f"field{site}" / f"{channel}_z{z + 1:03d}.tif", zcyx[z, c], None
                )
        folders[plate] = out / plate
    return folders


def platemap(samples: pd.DataFrame) -> pd.DataFrame:
    """The sheet's wells as a JUMP-style plate map (``Metadata_Plate``, ``well_position``,
    ``pert_iname``, ``mmoles_per_liter``, ``pert_type``)."""
    wells = samples.groupby(["plate", "well"], as_index=False).first()
    return pd.DataFrame(
        {
            "Metadata_Plate": wells["plate"],
            "well_position": wells["well"],
            "pert_iname": wells["treatment"],
            "mmoles_per_liter": wells["concentration"] / 1000.0,
            "pert_type": np.where(wells["control"], "negcon", "trt"),
        }
    )


def sites_of(sheet: pd.DataFrame) -> Sequence[Site]:
    return [Site.from_record(r) for r in sheet.to_dict("records")]
