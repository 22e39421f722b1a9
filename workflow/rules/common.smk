"""Validation of config and sample sheet at parse time, and the input functions of all rules."""

import hashlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

AGGREGATE_SUMMARY = "results/aggregate/summary.json"


# The library and the schemas live beside the rules in the workflow's source. From a clone
# they are read where they lie. Used as a module from a git source (a tag on GitHub, a local
# git repository), a module's files reach Snakemake one at a time through its source cache,
# not as a folder: the library (listed in lib/MANIFEST) and the schemas are copied out of the
# source once per source and version into .snakemake/gradcamo/ (in the working directory,
# which cluster jobs share). Jobs (scripts, conda envs, cluster nodes) find the library
# through PYTHONPATH, the Snakefile itself through sys.path.
def _workflow_library():
    rules = workflow.current_basedir.get_path_or_uri(secret_free=True)
    if os.path.isdir(rules):
        return str(Path(rules).parent / "lib")
    target = Path(".snakemake/gradcamo") / hashlib.sha1(rules.encode()).hexdigest()[:16]
    if not (target / "lib").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=target.parent))
        files = Path(workflow.source_path("../lib/MANIFEST")).read_text().split()
        files = [f"lib/{name}" for name in files]
        files += ["schemas/config.schema.yaml", "schemas/samples.schema.yaml"]
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workflow.source_path(f"../{name}"), tmp / name)
        try:
            tmp.rename(target)  # atomic: a job parsing at the same time sees all or nothing
        except OSError:  # another process (a job) finished the same copy first
            shutil.rmtree(tmp, ignore_errors=True)
    return str((target / "lib").absolute())


LIB_DIR = _workflow_library()
sys.path.insert(0, LIB_DIR)
# (update() sets the variable for the jobs; the workflow requires none from the user.)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (LIB_DIR, os.getenv("PYTHONPATH")) if p))
# numba (Cellpose, UMAP) and matplotlib need writable caches; Cellpose looks up model
# weights offline in CELLPOSE_LOCAL_MODELS_PATH. Users may preset any of them.
for var, default in (
    ("NUMBA_CACHE_DIR", ".snakemake/cache/numba"),
    ("MPLCONFIGDIR", ".snakemake/cache/matplotlib"),
    ("CELLPOSE_LOCAL_MODELS_PATH", "resources/cellpose_models"),
):
    os.environ.setdefault(var, str(Path(default).absolute()))

from gradcamo.config import check_renamed_keys
from gradcamo.errors import InputError
from gradcamo.readers import PLANE_LAYOUTS, ImageSettings
from gradcamo.samples import (
    check_config,
    coerce_to_schema,
    check_sample_sheet,
    read_sample_sheet,
    reference_wells,
    unknown_key_message,
    wells_table,
)


def _schema_error(exc, what, is_config=False):
    """Turn snakemake.utils.validate's error into one line naming the key or field."""
    # WorkflowError flattens its arguments into text; jsonschema's error is its context.
    err = exc.__cause__ or exc.__context__
    err = err if hasattr(err, "validator") else None
    if err is None:
        return f"{what}: {exc}"
    path = [str(p) for p in err.absolute_path]
    if err.validator == "additionalProperties":
        allowed = err.schema.get("properties", {}).keys()
        unexpected = [k for k in err.instance if k not in allowed]
        if is_config:
            return unknown_key_message(path, unexpected[0], allowed)
        return f"{what}: unknown field(s) {unexpected}"
    where = ".".join(path) if path else "(top level)"
    if is_config:
        return f"config key {where!r}: {err.message}"
    return f"{what}: field {where!r}: {err.message}"


# Nested --config values arrive as strings ("2" for 2): read them as the schema's types.
with open(workflow.source_path("../schemas/config.schema.yaml")) as _f:
    _CONFIG_SCHEMA = yaml.safe_load(_f)
config.update(coerce_to_schema(dict(config), _CONFIG_SCHEMA))

check_renamed_keys(config)
try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    raise InputError(_schema_error(exc, "config", is_config=True)) from None

SAMPLE_SHEET = config["samples"]
SAMPLES = read_sample_sheet(SAMPLE_SHEET)
try:
    validate(SAMPLES.drop(columns="line"), "../schemas/samples.schema.yaml", set_default=False)
except WorkflowError as exc:
    _i = int(re.search(r"row (\d+)", str(exc.args[0])).group(1))
    _row = SAMPLES.iloc[_i]
    _where = f"{SAMPLE_SHEET} line {_row.line} ({_row.plate}/{_row.well}, site {_row.site})"
    raise InputError(_schema_error(exc, _where)) from None
check_sample_sheet(SAMPLES, SAMPLE_SHEET)
check_config(config, SAMPLES)

CHANNELS = list(config["channels"])
RESOURCES = config["resources"]
# How the maps behind Grad-CAMO are made: the profile stage's, the checks' and the summary's.
ATTRIBUTION = {
    k: config["profile"][k]
    for k in ("attribution_method", "ig_steps", "smoothing_sigma", "target_layer", "target_resolution")
}


def job_resources(rule_name):
    """A rule's memory, runtime and GPUs from config key ``resources.<rule>`` (its threads:
    ``RESOURCES[rule]["threads"]``); never in params, so changing them reruns nothing."""
    return {k: v for k, v in RESOURCES[rule_name].items() if k != "threads"}


# How every job reads a site (gradcamo.readers): the layout and what it needs, as params.
IMAGE_SETTINGS = ImageSettings.from_config(config).as_dict()
# Per-plane layouts are listed once per plate (rule index_images); jobs read their index.
PLANE_LAYOUT = config["images"]["layout"] in PLANE_LAYOUTS
CHANNEL_IMAGE_COLUMNS = (
    [f"image_{c}" for c in CHANNELS] if config["images"]["layout"] == "channel_files" else []
)

# The report's front page states the run's answer in numbers. Snakemake renders that page
# (workflow/report/workflow.rst) with nothing but the config, so the finished run's
# headline is handed to it under a key no user sets (after validation, for the report only).
if Path(AGGREGATE_SUMMARY).is_file():
    import json

    from gradcamo.headline import headline

    config["_headline"] = headline(json.loads(Path(AGGREGATE_SUMMARY).read_text()))
WELLS = wells_table(SAMPLES)


wildcard_constraints:
    plate="|".join(sorted(set(WELLS.plate))),
    well="|".join(sorted(set(WELLS.well))),


def expand_wells(pattern):
    """``pattern`` formatted with ``plate`` and ``well`` for every well of the sheet."""
    return [pattern.format(plate=p, well=w) for p, w in zip(WELLS.plate, WELLS.well)]


def expand_plates(pattern):
    """``pattern`` formatted with ``plate`` for every plate of the sheet."""
    return [pattern.format(plate=p) for p in sorted(set(WELLS.plate))]


# The sheet's rows of every well, grouped once: an input function per job must not filter
# the whole sheet (a 10-plate screen has 35,000 rows and 3,840 wells per rule).
SITES_OF_WELL = {
    key: rows.sort_values("site") for key, rows in SAMPLES.groupby(["plate", "well"], sort=False)
}


def well_sites(wildcards):
    """The sheet's rows (one per site) of the well named by the wildcards, in site order."""
    return SITES_OF_WELL[(wildcards.plate, wildcards.well)]


def well_metadata(wildcards):
    """The well's metadata columns in every cell's row: plate, well, treatment, concentration, control."""
    return well_sites(wildcards)[["plate", "well", "treatment", "concentration", "control"]].iloc[0].to_dict()


def reference_sites(plate):
    """The sheet's rows of the sites a plate is normalised by (crops.normalization.reference:
    its control wells, or all wells), in well and site order."""
    return (
        SAMPLES[SAMPLES.well.isin(reference_wells(WELLS, plate, config))]
        .query("plate == @plate")
        .sort_values(["well", "site"])
    )


def site_labels(plate, well, site):
    """The label image the segment rule writes for one site (inside its well's folder)."""
    return f"results/segment/{plate}/{well}/site{site}.tif"


def image_index(plate):
    """The plane index of a plate (per-plane layouts), written by rule index_images."""
    return f"results/images/{plate}.parquet"


def site_files(rows):
    """What reading these sheet rows' sites depends on: their z-stacks, per-channel files or
    OME-Zarr plate; nothing for per-plane layouts, whose jobs depend on the index instead."""
    if PLANE_LAYOUT:
        return []
    if CHANNEL_IMAGE_COLUMNS:
        return [path for row in rows[CHANNEL_IMAGE_COLUMNS].itertuples(index=False) for path in row]
    return list(dict.fromkeys(rows["image"]))


def site_index(rows):
    """The plane indexes of these sheet rows' plates (per-plane layouts; otherwise none)."""
    return sorted({image_index(p) for p in rows["plate"]}) if PLANE_LAYOUT else []


def site_records(rows, labels=False):
    """The sites of sheet rows as gradcamo.readers.Site fields, with the label image the
    segment rule writes for each when ``labels``."""
    records = rows[["plate", "well", "site", "image", *CHANNEL_IMAGE_COLUMNS]].to_dict("records")
    if labels:
        records = [{**r, "labels": site_labels(r["plate"], r["well"], r["site"])} for r in records]
    return records


def reference_segments(plate):
    """Label folders (results/segment/{plate}/{well}) of a plate's reference wells."""
    return [f"results/segment/{plate}/{well}" for well in reference_wells(WELLS, plate, config)]


def well_labels(wildcards):
    """Ground-truth label paths (or None) of the well's sites, in site order."""
    return list(well_sites(wildcards)["labels"])


def aggregate_targets():
    """Every table and figure of the aggregate stage (names in aggregate.smk)."""
    return [*AGGREGATE_TABLES.values(), *FIGURES.values()]


def check_summaries():
    """The enabled model checks' summaries (checks.smk), by name, for the aggregate stage."""
    paths = {"randomisation": "results/checks/randomisation.json", "planted": "results/checks/planted.json"}
    return {name: path for name, path in paths.items() if config["checks"][name]["enabled"]}
