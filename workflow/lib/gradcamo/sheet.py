"""The sample-sheet builder: from a microscope export (or a LoadData CSV, an OME-Zarr plate, a
folder of z-stacks) and a plate map to a validated ``samples.tsv``.

    gradcamo-sheet --config config/config.yaml /data/plate1/Images/Index.idx.xml \\
        --platemap platemap.txt -o config/samples.tsv

It lists the export's fields (one sheet row each, ``image`` naming the export), joins the plate
map by well, and prints what it found (plates, wells, fields, planes, channels, pixel size,
z step) and what is missing (wells without a plate-map row, plate-map wells without images,
fields with planes or channels missing). With ``--config`` the sheet is checked exactly as the
workflow will check it: channels by name, voxel size, every plane of every field.

Plate maps: a TSV or CSV with a well column and a treatment column, under this workflow's
names or the JUMP / pycytominer ones (``well_position``, ``pert_iname``, ``broad_sample``,
``mmoles_per_liter``, ``pert_type``; a ``Metadata_`` prefix is ignored); a ``plate`` column
(or ``Assay_Plate_Barcode``) restricts a row to one plate.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from gradcamo.config import load_config
from gradcamo.errors import InputError
from gradcamo.readers import LAYOUTS, PLANE_LAYOUTS, ImageSettings, Site, plane_table
from gradcamo.readers.ome_zarr import plate_name, zarr_sites
from gradcamo.readers.planes import select_sites
from gradcamo.samples import check_image_columns, check_sample_sheet, read_sample_sheet
from gradcamo.wells import canonical_well

#: Plate-map columns: this workflow's name -> accepted names, in order of preference.
PLATEMAP_COLUMNS = {
    "plate": ("plate", "Plate", "Assay_Plate_Barcode", "plate_barcode", "barcode"),
    "well": ("well", "well_position", "Well", "WellName", "well_name"),
    "treatment": ("treatment", "pert_iname", "compound", "broad_sample", "jcp2022", "pert_id"),
    "concentration": ("concentration", "mmoles_per_liter", "dose", "pert_dose", "mg_per_ml"),
    "control": ("control", "pert_type"),
}
#: Multipliers to µM (the sheet's unit) of the concentration columns that carry a unit.
_TO_MICROMOLAR = {"mmoles_per_liter": 1000.0}
#: ``pert_type`` values of control wells (JUMP: negcon; LINCS: ctl_vehicle).
CONTROL_TYPES = {"control", "negcon", "ctl_vehicle", "neg_con", "negative_control", "true", "yes", "1"}
_NAME = re.compile(r"[^A-Za-z0-9_.+-]+")
_PLATE = re.compile(r"[^A-Za-z0-9_-]+")


def _pick(columns: Sequence[str], names: Sequence[str]) -> str | None:
    bare = {re.sub(r"^Metadata_", "", c): c for c in columns}
    for name in names:
        for key, column in bare.items():
            if key.lower() == name.lower():
                return column
    return None


def read_platemap(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A plate map as ``plate`` (None: every plate), ``well``, ``treatment``,
    ``concentration`` (µM, NaN if absent), ``control`` (bool or None if the map does not say),
    ``line``; and which of its columns became which."""
    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: plate map does not exist") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read the plate map ({exc})") from None
    used = {key: _pick(list(raw.columns), names) for key, names in PLATEMAP_COLUMNS.items()}
    for key in ("well", "treatment"):
        if used[key] is None:
            raise InputError(
                f"{path}: no {key} column (accepted: {', '.join(PLATEMAP_COLUMNS[key])}; "
                f"header: {list(raw.columns)})"
            )
    solvent = _pick(list(raw.columns), ("solvent",))
    rows = []
    for i, row in raw.iterrows():
        treatment = row[used["treatment"]].strip() or (row[solvent].strip() if solvent else "")
        if not treatment:
            raise InputError(f"{path} line {i + 2}: well {row[used['well']]!r} has no treatment")
        concentration = float("nan")
        if used["concentration"] and row[used["concentration"]].strip():
            try:
                concentration = float(row[used["concentration"]]) * _TO_MICROMOLAR.get(
                    re.sub(r"^Metadata_", "", used["concentration"]), 1.0
                )
            except ValueError:
                raise InputError(
                    f"{path} line {i + 2}: {used['concentration']} "
                    f"{row[used['concentration']]!r} is not a number"
                ) from None
        control = None
        if used["control"]:
            control = row[used["control"]].strip().lower() in CONTROL_TYPES
        rows.append(
            {
                "plate": row[used["plate"]].strip() if used["plate"] else None,
                "well": canonical_well(row[used["well"]].strip()),
                "treatment": treatment,
                "concentration": concentration,
                "control": control,
                "line": i + 2,
            }
        )
    table = pd.DataFrame(rows, columns=["plate", "well", "treatment", "concentration", "control", "line"])
    twice = table[table.duplicated(["plate", "well"], keep=False)]
    if len(twice):
        first = twice.iloc[0]
        lines = list(twice.loc[twice.well == first.well, "line"])
        raise InputError(f"{path}: well {first.well} is mapped twice (lines {lines})")
    return table, {k: v for k, v in used.items() if v}


def export_fields(
    layout: str, source: str | Path, settings: ImageSettings | None = None, **options
) -> tuple[pd.DataFrame, dict]:
    """The fields of one export as sheet rows without treatments (``plate``, ``well``,
    ``site``, ``image`` or ``image_<channel>``) and a summary of what it holds.

    ``options``: ``regex`` (layouts ``tiff`` and ``channel_files``: named groups ``well``,
    optionally ``plate`` and ``site``, and ``channel`` for ``channel_files``; matched against
    file paths under ``source``), ``glob`` (default ``**/*.tif*``), ``plate`` (the plate's name
    when the export does not give one).
    """
    source = Path(source)
    settings = settings or _bare_settings(layout)
    if layout in PLANE_LAYOUTS:
        table = plane_table(source, settings)
        fields = table.planes.drop_duplicates(["plate", "well", "site"])[["plate", "well", "site"]].copy()
        fields["image"] = str(source)
        return fields, table.summary()
    if layout == "ome_zarr":
        fields = zarr_sites(source)[["well", "site"]].assign(plate=plate_name(str(source)) or source.stem)
        fields["image"] = str(source)
        return fields, {"source": str(source), "wells": int(fields.well.nunique()), "fields": len(fields)}
    regex = options.get("regex")
    if not regex:
        raise InputError(
            f"layout {layout!r}: give --regex with named groups well (and site, plate"
            + (", channel" if layout == "channel_files" else "")
            + ")"
        )
    pattern = re.compile(regex)
    rows = []
    for path in sorted(source.glob(options.get("glob") or "**/*.tif*")):
        match = pattern.search(path.relative_to(source).as_posix())
        if match:
            found = match.groupdict()
            rows.append(
                {
                    "plate": found.get("plate"),
                    "well": canonical_well(found["well"]),
                    "site": int(found.get("site") or 1),
                    "channel": found.get("channel"),
                    "image": str(path),
                }
            )
    if not rows:
        raise InputError(f"{source}: --regex {regex!r} matches no file under this folder")
    files = pd.DataFrame(rows)
    if layout == "tiff":
        return files.drop(columns="channel"), {"source": str(source), "files": len(files)}
    wide = files.pivot_table(
        index=["plate", "well", "site"], columns="channel", values="image", aggfunc="first", dropna=False
    )
    names = {c: settings.export_name(c) for c in settings.channels} if settings.channels else {}
    wide = wide.rename(
        columns={v: f"image_{k}" for k, v in names.items()} or {c: f"image_{c}" for c in wide.columns}
    )
    return wide.reset_index(), {
        "source": str(source),
        "files": len(files),
        "channels": sorted(set(files.channel)),
    }


def _bare_settings(layout: str) -> ImageSettings:
    """Settings that list an export without checking it against a configuration."""
    return ImageSettings((), layout, None, {}, (1.0, 1.0, 1.0), float("inf"))


def build_sheet(
    fields: pd.DataFrame, platemap: pd.DataFrame, control: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Sheet rows for every field whose well the plate map names, and what did not match.

    Returns
    -------
    ``(sheet, report)``: the sheet in the workflow's columns, sorted by plate, well, site;
    ``report`` with ``unmapped_wells`` (in the export, not in the plate map) and
    ``wells_without_images`` (in the plate map, not in the export), and ``renamed`` (names
    changed to the sheet's allowed characters).
    """
    renamed = {}

    def clean(value: str, pattern: re.Pattern) -> str:
        new = pattern.sub("_", value).strip("_") or "_"
        if new != value:
            renamed[value] = new
        return new

    fields = fields.copy()
    fields["plate"] = [clean(str(p), _PLATE) if p is not None else "plate1" for p in fields["plate"]]
    per_plate = platemap[platemap.plate.notna()]
    shared = platemap[platemap.plate.isna()]
    rows, unmapped = [], []
    for field in fields.itertuples(index=False):
        hit = per_plate[(per_plate.plate == field.plate) & (per_plate.well == field.well)]
        hit = hit if len(hit) else shared[shared.well == field.well]
        if hit.empty:
            unmapped.append(f"{field.plate}/{field.well}")
            continue
        entry = hit.iloc[0]
        is_control = (
            entry.control
            if entry.control is not None
            else (control is not None and entry.treatment == control)
        )
        rows.append(
            {
                **field._asdict(),
                "treatment": clean(entry.treatment, _NAME),
                "concentration": entry.concentration,
                "control": "true" if is_control else "false",
            }
        )
    image_columns = [c for c in fields.columns if c == "image" or c.startswith("image_")]
    sheet = pd.DataFrame(
        rows, columns=["plate", "well", "site", *image_columns, "treatment", "concentration", "control"]
    )
    sheet = sheet.sort_values(["plate", "well", "site"], ignore_index=True)
    mapped = {(p, w) for p, w in zip(fields.plate, fields.well)}
    plates = sorted(set(fields.plate))
    without = sorted(
        f"{p}/{w}"
        for p in plates
        for w in set(platemap.loc[platemap.plate.isna() | (platemap.plate == p), "well"])
        if (p, w) not in mapped
    )
    return sheet, {
        "unmapped_wells": sorted(set(unmapped)),
        "wells_without_images": without,
        "renamed": renamed,
    }


def check_fields(sheet: pd.DataFrame, settings: ImageSettings) -> tuple[pd.DataFrame, list[str]]:
    """Sheet rows whose fields read as the configuration says (per-plane layouts: every
    plane of every configured channel, by name), and one message per field that does not.
    Each export is listed once."""
    if settings.layout not in PLANE_LAYOUTS:
        return sheet, []
    tables = {source: plane_table(source, settings) for source in sorted(set(sheet["image"]))}
    keep, problems = [], []
    for i, record in enumerate(sheet.to_dict("records")):
        site = Site.from_record(record)
        try:
            select_sites(tables[site.image], [site], settings)
            keep.append(i)
        except InputError as exc:
            problems.append(str(exc))
    return sheet.iloc[keep].reset_index(drop=True), problems


def write_sheet(sheet: pd.DataFrame, path: str | Path, config: Mapping[str, Any] | None = None) -> None:
    """Write ``sheet`` as TSV (paths relative to the sheet's folder) and check it as the
    workflow will; a sheet that fails is removed, not left behind."""
    path = Path(path)
    out = sheet.copy()
    for column in [c for c in out.columns if c == "image" or c.startswith("image_")]:
        out[column] = [_relative(p, path.parent) for p in out[column]]
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, sep="\t", index=False)
    try:
        checked = read_sample_sheet(path)
        check_sample_sheet(checked, path)
        if config is not None:
            check_image_columns(config, checked)
    except InputError:
        path.unlink()
        raise


def _relative(value: str, folder: Path) -> str:
    try:
        return Path(value).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(Path(value).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gradcamo-sheet",
        description="Build a gradcamo sample sheet from a microscope export and a plate map.",
    )
    parser.add_argument("sources", nargs="+", help="export index or folder, LoadData CSV, .zarr plate, ...")
    parser.add_argument(
        "--platemap", required=True, help="TSV/CSV: well -> treatment (+ concentration, control)"
    )
    parser.add_argument("-o", "--output", required=True, help="the sample sheet to write (TSV)")
    parser.add_argument("--config", help="the workflow's config.yaml: layout, channels, names, voxel size")
    parser.add_argument("--layout", choices=LAYOUTS, help="the export's layout (default: the config's)")
    parser.add_argument(
        "--control", help="treatment of the control wells (when the plate map has no control column)"
    )
    parser.add_argument(
        "--regex", help="tiff / channel_files: regex with named groups well, site, plate, channel"
    )
    parser.add_argument("--glob", help="tiff / channel_files: files to match (default **/*.tif*)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else None
        settings = ImageSettings.from_config(config) if config else None
        layout = args.layout or (settings.layout if settings else None)
        if layout is None:
            raise InputError("give --layout or --config")
        if settings is not None and layout != settings.layout:
            raise InputError(f"--layout {layout} but the config's images.layout is {settings.layout}")
        platemap, used = read_platemap(args.platemap)
        print(f"plate map {args.platemap}: {len(platemap)} wells; columns {used}")
        found = []
        for source in args.sources:
            fields, summary = export_fields(layout, source, settings, regex=args.regex, glob=args.glob)
            print(f"export {source}: {json.dumps(summary)}")
            found.append(fields)
        sheet, report = build_sheet(pd.concat(found, ignore_index=True), platemap, args.control)
        problems = []
        if settings is not None:
            sheet, problems = check_fields(sheet, settings)
        print(
            f"sheet: {sheet.plate.nunique()} plate(s), {sheet.groupby(['plate', 'well']).ngroups} wells, "
            f"{len(sheet)} fields, {sheet.treatment.nunique()} treatments "
            f"({(sheet.control == 'true').groupby([sheet.plate, sheet.well]).any().sum()} control wells)"
        )
        for key, title in (
            ("unmapped_wells", "wells with images but no plate-map row (left out)"),
            ("wells_without_images", "plate-map wells without images"),
        ):
            if report[key]:
                print(f"missing: {len(report[key])} {title}: {', '.join(report[key][:20])}")
        for problem in problems:
            print(f"missing: field left out: {problem}")
        if report["renamed"]:
            print(f"renamed to the sheet's characters: {report['renamed']}")
        write_sheet(sheet, args.output, config)
        print(f"wrote {args.output}")
        if config is None:
            print(f"next: set images.layout: {layout} in the config, and run with --config to check channels")
        return 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
