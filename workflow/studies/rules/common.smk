"""The studies' configuration, validated at parse time, and the models each study needs."""

import os
import re
import sys
from pathlib import Path

import yaml
from snakemake_interface_executor_plugins.settings import DeploymentMethod

REPO = Path(workflow.basedir).resolve().parents[1]
LIB_DIR = str(REPO / "workflow" / "lib")
sys.path.insert(0, LIB_DIR)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (LIB_DIR, os.getenv("PYTHONPATH")) if p))
for var, default in (
    ("NUMBA_CACHE_DIR", ".snakemake/cache/numba"),
    ("MPLCONFIGDIR", ".snakemake/cache/matplotlib"),
    ("CELLPOSE_LOCAL_MODELS_PATH", str(REPO / "resources" / "cellpose_models")),
):
    os.environ.setdefault(var, str(Path(default).absolute()))

from gradcamo.config import SCHEMA_PATH, complete_config, complete_with_schema
from gradcamo.errors import InputError
from gradcamo.samples import coerce_to_schema

# torch-free imports only: the workflow's DAG is built without the heavy libraries
from gradcamo.attribution_methods import smoothing_sigmas
from gradcamo.studies import KINDS
from gradcamo.studies.design import grid, merged

with open(workflow.source_path("../schemas/config.schema.yaml")) as _f:
    _SCHEMA = yaml.safe_load(_f)
# Nested --config values arrive as strings ("72" for 72): read them as the schema's types.
config.update(complete_with_schema(coerce_to_schema(dict(config), _SCHEMA), _SCHEMA, what="studies config"))
# ... and the keys of the main config inside it (main_overrides, the train overrides of the
# study and of each setting) as the main schema's types.
_MAIN_SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
config["main_overrides"] = coerce_to_schema(config["main_overrides"], _MAIN_SCHEMA)
for _train in [config["train"]] + [s["train"] for s in config["penalty"]["settings"].values()]:
    _train.update(coerce_to_schema(_train, _MAIN_SCHEMA["properties"]["train"]))


def repo_path(path):
    """A configured path: as given when absolute, else relative to the repository."""
    return str(path if Path(path).is_absolute() else REPO / path)


OUT = "results/validate"
MAIN_SNAKEFILE = str(REPO / "workflow" / "Snakefile")
try:
    with open(repo_path(config["main_config"])) as _f:
        _main = yaml.safe_load(_f) or {}
except FileNotFoundError:
    raise InputError(f"studies config key 'main_config': {repo_path(config['main_config'])} does not exist")
# The main workflow's configuration of every variant's run, completed with its defaults (a
# typo in main_overrides is named here); what the study's trainings and maps start from.
MAIN = complete_config(merged(_main, config["main_overrides"]))
CLEAN_SHEET = Path(repo_path(config["clean_dataset"])) / "samples.tsv"
if not CLEAN_SHEET.is_file():
    raise InputError(f"studies config key 'clean_dataset': {CLEAN_SHEET} does not exist")
SETTINGS = config["penalty"]["settings"]
if "weight_0" not in SETTINGS:
    raise InputError("studies config key 'penalty.settings': weight_0, the baseline, is missing")
for _name, _setting in SETTINGS.items():
    try:  # every setting's train section, checked by the main schema before any job runs
        complete_config(merged(MAIN, {"train": merged(config["train"], _setting["train"])}))
    except InputError as exc:
        raise InputError(f"studies config key 'penalty.settings.{_name}': {exc}") from None
SEEDS = list(range(config["seeds"]))
IG_STEPS = config["attribution"]["ig_steps"] or MAIN["profile"]["ig_steps"]
RESOURCES = config["resources"]
# A run with per-rule conda envs runs each variant's main-workflow rules in theirs too.
DEPLOYMENT = (
    ["--sdm", "conda"] if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else []
)


def job_resources(rule_name):
    """A rule's memory, runtime and GPUs (config key ``resources.<rule>``); not its threads."""
    return {k: v for k, v in RESOURCES[rule_name].items() if k != "threads"}


wildcard_constraints:
    variant="clean|confounded",
    context="full|cell",
    setting="|".join(re.escape(s) for s in SETTINGS),
    seed=r"\d+",


def model_name(variant, context, setting, seed):
    return f"{variant}-{context}-{setting}-seed{seed}"


def attribution_models():
    """(variant, context, setting, seed) of the attribution study: each kind, weight 0."""
    if not config["attribution"]["enabled"]:
        return []
    kinds = config["attribution"]["kinds"]
    return [(*KINDS[k], "weight_0", s) for s in SEEDS for k in kinds]


def evidence_models():
    """The evidence study's models: the clean and confounded full-context models, weight 0."""
    if not config["evidence"]["enabled"]:
        return []
    return [(v, "full", "weight_0", s) for s in SEEDS for v in config["evidence"]["variants"]]


def penalty_models():
    """The penalty study's: every setting on each of its variants, full context."""
    if not config["penalty"]["enabled"]:
        return []
    return [(v, "full", name, s) for s in SEEDS for name in SETTINGS for v in config["penalty"]["variants"]]


def study_models():
    """Every model the studies train, once each (the studies share their weight 0 models)."""
    return list(dict.fromkeys(attribution_models() + evidence_models() + penalty_models()))


def model_paths(pattern, models):
    return [pattern.format(model=model_name(*m)) for m in models]


def wells_table(wildcards):
    """The well split with crop stores a model trains and is scored on (context full: the
    variant's run; cell: its cell-context stores)."""
    if wildcards.context == "cell":
        return f"{OUT}/{wildcards.variant}/cell/wells.tsv"
    return f"{OUT}/{wildcards.variant}/wells.tsv"


def variant_sheet(wildcards):
    """The sample sheet of a variant: the clean dataset's, or the generated confounded one."""
    if wildcards.variant == "clean":
        return str(CLEAN_SHEET)
    return f"{OUT}/data/confounded/samples.tsv"


def train_settings(wildcards):
    """The ``train`` section of one study model: the main config's, the study's overrides,
    the setting's, and the seed."""
    base = merged(MAIN["train"], config["train"])
    return merged(base, {**SETTINGS[wildcards.setting]["train"], "seed": int(wildcards.seed)})


MAPS = grid(
    MAIN["voxel_size"],
    config["attribution"]["methods"],
    config["attribution"]["layers"],
    config["attribution"]["smoothing"],
)


def summary_outputs():
    """The outputs of study_summary, by name: the studies' tables and figure under
    results/validate, and the docs' copies of the tables (config key ``docs``)."""
    out = {"jobs": f"{OUT}/jobs.tsv"}
    docs = config["docs"]
    if config["attribution"]["enabled"]:
        out |= {
            "table": f"{OUT}/table.tsv",
            "models": f"{OUT}/models.tsv",
            "attribution": f"{OUT}/summary.md",
        }
        if docs:
            out["docs_attribution"] = f"{docs}/attribution.md"
    if config["evidence"]["enabled"]:
        out |= {
            "evidence_cells": f"{OUT}/evidence/cells.tsv",
            "evidence_randomisation": f"{OUT}/evidence/randomisation.tsv",
            "evidence_curve": f"{OUT}/evidence/curve.tsv",
            "evidence_figure": f"{OUT}/evidence/curve.png",
            "evidence": f"{OUT}/evidence/summary.md",
        }
        if docs:
            out |= {
                "docs_evidence": f"{docs}/evidence.md",
                "docs_evidence_figure": f"{docs}/evidence_curve.png",
            }
    if config["penalty"]["enabled"]:
        out |= {"penalty_models": f"{OUT}/penalty_models.tsv", "penalty": f"{OUT}/penalty_summary.md"}
        if docs:
            out["docs_penalty"] = f"{docs}/penalty.md"
    return out
