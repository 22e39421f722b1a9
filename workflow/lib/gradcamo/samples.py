"""The sample sheet and the configuration: reading and the checks a JSON schema cannot express.

The sheet has one row per field of view (site): ``plate, well, site, image, treatment`` and
optionally ``concentration``, ``control`` and ``labels`` (a ground-truth label image). What
``image`` names depends on ``images.layout`` (a z-stack file, an export's index or folder, an
OME-Zarr plate); layout ``channel_files`` has one column ``image_<channel>`` per channel
instead. Relative paths are resolved against the sheet's own folder, so a dataset folder
with its sheet can be moved as a whole.

Every error is an :class:`~gradcamo.errors.InputError` naming the file, the line of the
sheet (line 1 is the header) and the field, or the configuration key.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from gradcamo.errors import InputError
from gradcamo.readers.pattern import compile_pattern
from gradcamo.wells import canonical_well

REQUIRED_COLUMNS = ("plate", "well", "site", "treatment")
OPTIONAL_COLUMNS = ("image", "concentration", "control", "labels")
#: Prefix of the per-channel image columns (layout ``channel_files``).
CHANNEL_IMAGE_PREFIX = "image_"
_TRUE = {"true", "yes", "1", "t", "y"}
_FALSE = {"false", "no", "0", "f", "n", ""}


def _row_name(sheet: str | os.PathLike, df: pd.DataFrame, i: int) -> str:
    """``"samples.tsv line 5 (P1/B02/site 1)"`` for the i-th data row (0-based)."""
    row = df.iloc[i]
    where = "/".join(str(row.get(c, "?")) for c in ("plate", "well"))
    return f"{sheet} line {i + 2} ({where}, site {row.get('site', '?')})"


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read the sheet (TSV) with typed columns and absolute ``image``/``labels`` paths.

    Returns a DataFrame with ``plate, well, treatment`` (str), ``site`` (int), ``image``
    (str or None), ``concentration`` (float, NaN if absent), ``control`` (bool; defaults to
    False), ``labels`` (str or None), any ``image_<channel>`` columns (str or None), in sheet
    order, plus ``line`` (the sheet's line number).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample sheet does not exist")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except Exception as exc:
        raise InputError(f"{path}: cannot parse as a tab-separated table ({exc})") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {list(df.columns)})")
    channel_columns = [c for c in df.columns if c.startswith(CHANNEL_IMAGE_PREFIX)]
    if "image" not in df.columns and not channel_columns:
        raise InputError(
            f"{path}: missing column 'image' (or, for layout channel_files, one 'image_<channel>' "
            f"column per channel) (header: {list(df.columns)})"
        )
    unknown = [c for c in df.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS + tuple(channel_columns)]
    if unknown:
        hints = {c: difflib.get_close_matches(c, REQUIRED_COLUMNS + OPTIONAL_COLUMNS, 1) for c in unknown}
        msg = ", ".join(f"{c!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for c, h in hints.items())
        raise InputError(f"{path}: unknown column(s) {msg}")
    if df.empty:
        raise InputError(f"{path}: the sample sheet has no rows")
    df = df.apply(lambda col: col.str.strip())
    for i in range(len(df)):
        for col in REQUIRED_COLUMNS:
            if df.iloc[i][col] == "":
                raise InputError(f"{_row_name(path, df, i)}: field {col!r} is empty")
    site = pd.to_numeric(df["site"], errors="coerce")
    for i in site.index[site.isna() | (site % 1 != 0)]:
        raise InputError(
            f"{_row_name(path, df, i)}: field 'site' must be an integer, got {df.at[i, 'site']!r}"
        )
    out = df.copy()
    out["site"] = site.astype(int)
    out["well"] = [canonical_well(w) for w in df["well"]]
    spellings = out.assign(raw=df["well"]).groupby(["plate", "well"])["raw"].unique()
    for (plate, well), raw in spellings.items():
        if len(raw) > 1:
            lines = [
                f"line {i + 2}: {df.at[i, 'well']!r}"
                for i in out.index[(out["plate"] == plate) & (out["well"] == well)]
                if df.at[i, "well"] != raw[0]
            ][:3]
            raise InputError(
                f"{path}: plate {plate!r} names well {well} in {len(raw)} ways "
                f"({', '.join(map(repr, raw))}; first {raw[0]!r}, then {', '.join(lines)}): "
                "use one spelling per well"
            )
    if "concentration" in df:
        conc = pd.to_numeric(df["concentration"].replace("", None), errors="coerce")
        bad = conc.isna() & (df["concentration"] != "")
        for i in conc.index[bad]:
            raise InputError(
                f"{_row_name(path, df, i)}: field 'concentration' must be a number, "
                f"got {df.at[i, 'concentration']!r}"
            )
        out["concentration"] = conc.astype(float)
    else:
        out["concentration"] = float("nan")
    if "control" in df:
        values = df["control"].str.lower()
        for i in values.index[~values.isin(_TRUE | _FALSE)]:
            raise InputError(
                f"{_row_name(path, df, i)}: field 'control' must be true or false, "
                f"got {df.at[i, 'control']!r}"
            )
        out["control"] = values.isin(_TRUE)
    else:
        out["control"] = False
    base = path.parent
    for col in ("image", "labels", *channel_columns):
        values = df[col] if col in df else [""] * len(df)
        out[col] = [str((base / p).resolve()) if p else None for p in values]
    out["line"] = range(2, len(df) + 2)
    return out[
        ["plate", "well", "site", "image", "treatment", "concentration", "control", "labels"]
        + channel_columns
        + ["line"]
    ]


def check_sample_sheet(samples: pd.DataFrame, sheet: str | os.PathLike) -> None:
    """Semantic checks on a read sheet; raises :class:`InputError` on the first problem.

    - no duplicate (plate, well, site);
    - every image (a file, or a folder: an export's, a ``.zarr`` plate), per-channel image
      and labels file, when given, exists;
    - all sites of a well share one treatment;
    - at least two treatments.
    """
    dup = samples.duplicated(["plate", "well", "site"], keep="first")
    for i in samples.index[dup]:
        first = samples[
            (samples.plate == samples.at[i, "plate"])
            & (samples.well == samples.at[i, "well"])
            & (samples.site == samples.at[i, "site"])
        ].iloc[0]
        raise InputError(
            f"{sheet} line {samples.at[i, 'line']}: duplicate row for plate {samples.at[i, 'plate']}, "
            f"well {samples.at[i, 'well']}, site {samples.at[i, 'site']} (first at line {first['line']})"
        )
    channel_columns = [c for c in samples.columns if c.startswith(CHANNEL_IMAGE_PREFIX)]
    for col in ("image", "labels", *channel_columns):
        # An export's images share one index or folder: each distinct path is checked once.
        checked = {}
        for line, p in zip(samples["line"], samples[col]):
            if p is None:
                continue
            if p not in checked:
                checked[p] = Path(p).is_file() or (col == "image" and Path(p).is_dir())
            if not checked[p]:
                raise InputError(f"{sheet} line {line}: field {col!r}: {p} does not exist")
    per_well = samples.groupby(["plate", "well"], sort=False)["treatment"].unique()
    for (plate, well), treatments in per_well.items():
        if len(treatments) > 1:
            rows = samples[(samples.plate == plate) & (samples.well == well)]
            lines = ", ".join(f"line {r.line}: {r.treatment}" for r in rows.itertuples())
            raise InputError(f"{sheet}: sites of well {plate}/{well} disagree on field 'treatment' ({lines})")
    treatments = sorted(samples["treatment"].unique())
    if len(treatments) < 2:
        raise InputError(
            f"{sheet}: field 'treatment' has only one value ({treatments[0]!r}); a classifier of "
            "treatments needs at least two"
        )


def wells_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per well: ``plate, well, treatment, control, n_sites``, sorted by plate and well."""
    return (
        samples.groupby(["plate", "well"], as_index=False)
        .agg(treatment=("treatment", "first"), control=("control", "any"), n_sites=("site", "size"))
        .sort_values(["plate", "well"], ignore_index=True)
    )


def control_wells(wells: pd.DataFrame, control: str) -> pd.Series:
    """Per well (rows of :func:`wells_table`): a control well, by the sheet's ``control``
    column or by having the configured control treatment."""
    return wells["control"].astype(bool) | (wells["treatment"] == control)


def reference_wells(wells: pd.DataFrame, plate: str, config: Mapping[str, Any]) -> list[str]:
    """Wells of ``plate`` that its crops are normalised by: its control wells
    (``crops.normalization.reference: controls``) or all its wells (``all``)."""
    here = wells["plate"] == plate
    if config["crops"]["normalization"]["reference"] == "controls":
        here &= control_wells(wells, config["aggregate"]["control"])
    return sorted(wells.loc[here, "well"])


_SCALARS = {"integer": int, "number": float, "boolean": bool}


def coerce_to_schema(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with strings that stand for numbers or booleans read as such, where the
    (JSON) schema asks for a number, an integer or a boolean.

    Snakemake passes nested ``--config`` values as strings (``--config train='{epochs: 2}'``
    gives ``{"epochs": "2"}``); a YAML file never needs this. Anything else -- and a string
    that does not read as the wanted type -- is returned unchanged for the schema to judge.
    """
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: coerce_to_schema(v, properties.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_to_schema(v, schema.get("items", {})) for v in value]
    wanted = schema.get("type", [])
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if not isinstance(value, str) or "string" in wanted:
        return value
    import yaml  # local: only a string that needs reading costs the import

    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    for name in wanted:
        kind = _SCALARS.get(name)
        if kind is bool and isinstance(parsed, bool):
            return parsed
        if kind is int and isinstance(parsed, int) and not isinstance(parsed, bool):
            return parsed
        if kind is float:
            if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
                return parsed
            try:  # YAML 1.1 reads "1e-3" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if name == "null" and parsed is None:
            return None
    return value


def unknown_key_message(key_path: Iterable[str], key: str, allowed: Iterable[str]) -> str:
    """Message for a misspelt configuration key, with the closest valid spelling."""
    allowed = list(allowed)
    dotted = ".".join([*key_path, key])
    hint = difflib.get_close_matches(key, allowed, n=1)
    suggestion = f"did you mean {'.'.join([*key_path, hint[0]])!r}? " if hint else ""
    return f"config key {dotted!r} is not known: {suggestion}valid keys here: {', '.join(sorted(allowed))}"


def check_config(config: Mapping[str, Any], samples: pd.DataFrame) -> None:
    """Semantic checks of the (schema-validated) configuration against the sample sheet."""
    channels = list(config["channels"])
    seg = config["segmentation"]
    for key in ("cytoplasm_channel", "nucleus_channel"):
        name = seg.get(key)
        if name is not None and name not in channels:
            raise InputError(
                f"config key 'segmentation.{key}' is {name!r}, which is not in 'channels' "
                f"({', '.join(channels)})"
            )
    treatments = set(samples["treatment"])
    control = config["aggregate"]["control"]
    if control not in treatments:
        raise InputError(
            f"config key 'aggregate.control' is {control!r}, but no well has that treatment "
            f"(treatments: {', '.join(sorted(treatments))})"
        )
    fractions = config["split"]["fractions"]
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"config key 'split.fractions' must sum to 1, got {total:g} ({fractions})")
    norm = config["crops"]["normalization"]
    if norm["lower_percentile"] >= norm["upper_percentile"]:
        raise InputError(
            "config key 'crops.normalization.lower_percentile' must be below 'upper_percentile' "
            f"({norm['lower_percentile']} >= {norm['upper_percentile']})"
        )
    if norm["reference"] == "controls":
        wells = wells_table(samples)
        for plate in sorted(set(wells["plate"])):
            if not reference_wells(wells, plate, config):
                raise InputError(
                    f"config key 'crops.normalization.reference' is 'controls', but plate "
                    f"{plate!r} has no control well (no 'control' row and no "
                    f"{control!r} treatment): add control wells, or set the key to 'all'"
                )
    sites = seg["train"]["sites"]
    if seg["model"] == "trained" and not sites:
        raise InputError(
            "config key 'segmentation.model' is 'trained' but 'segmentation.train.sites' is empty: "
            "name the annotated sites (plate/well/site) to train on"
        )
    # Checked whatever the model: a site left here after switching to a built-in model would
    # otherwise reach the train_segmentation rule as an input that is not a file.
    index = {f"{r.plate}/{r.well}/{r.site}": r for r in samples.itertuples()}
    for site in sites:
        if site not in index:
            raise InputError(
                f"config key 'segmentation.train.sites': site {site!r} is not in the sample sheet"
            )
        if not isinstance(index[site].labels, str):
            raise InputError(
                f"config key 'segmentation.train.sites': site {site!r} (sheet line "
                f"{index[site].line}) has no 'labels' (ground-truth label image)"
                + (
                    ""
                    if seg["model"] == "trained"
                    else f"; segmentation.model is {seg['model']!r}: empty the list"
                )
            )
    check_image_columns(config, samples)


def check_image_columns(config: Mapping[str, Any], samples: pd.DataFrame) -> None:
    """The sheet's image columns against ``images.layout``: ``image_<channel>`` for every
    configured channel (layout ``channel_files``, and no other image column), or ``image``
    on every row (every other layout); ``images.channel_names`` keys are configured channels;
    layout ``pattern`` has its glob and regex."""
    channels = list(config["channels"])
    images = config["images"]
    layout = images["layout"]
    columns = [c for c in samples.columns if c.startswith(CHANNEL_IMAGE_PREFIX)]
    for key in images["channel_names"]:
        if key not in channels:
            hint = difflib.get_close_matches(key, channels, 1)
            raise InputError(
                f"config key 'images.channel_names.{key}': {key!r} is not in 'channels' "
                f"({', '.join(channels)})" + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
    if layout == "channel_files":
        for col in columns:
            if col[len(CHANNEL_IMAGE_PREFIX) :] not in channels:
                raise InputError(
                    f"sample sheet column {col!r} names no configured channel ({', '.join(channels)})"
                )
        for channel in channels:
            col = CHANNEL_IMAGE_PREFIX + channel
            if col not in samples.columns:
                raise InputError(
                    f"config key 'images.layout' is 'channel_files', but the sample sheet has no "
                    f"column {col!r} (one ZYX file per channel per field)"
                )
            empty = samples.loc[samples[col].isna(), "line"]
            if len(empty):
                raise InputError(f"sample sheet line {empty.iloc[0]}: field {col!r} is empty")
        return
    if columns:
        raise InputError(
            f"sample sheet column(s) {columns} are for config key 'images.layout: channel_files'; "
            f"the layout is {layout!r}, which reads the column 'image'"
        )
    empty = samples.loc[samples["image"].isna(), "line"]
    if len(empty):
        raise InputError(f"sample sheet line {empty.iloc[0]}: field 'image' is empty (layout {layout!r})")
    if layout == "pattern":
        compile_pattern(images["pattern"])
