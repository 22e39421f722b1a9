"""The validation studies as a workflow (workflow/studies, `make validate`): the full study's
DAG (one training per variant, context, setting and seed; through the SLURM profile too),
its configuration errors, and its tiny real instance (.test/studies/config.yaml: every rule
once, on the confounded variant, one seed, two epochs, one map)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE
from gradcamo.store import CropStore

STUDIES = REPO / "workflow" / "studies"
TINY = REPO / ".test" / "studies" / "config.yaml"
# One worker runs the tiny instance once, for all its tests: the mini run's, after the mini
# run and the paper screen (tests/test_paper_screen.py says why not beside them).
pytestmark = pytest.mark.xdist_group("mini_run")


def study(workdir: Path, *args: str, check: bool = True, timeout: int = 2400) -> subprocess.CompletedProcess:
    """Run the studies' workflow in ``workdir``."""
    cmd = [SNAKEMAKE, "-s", str(STUDIES / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(stdout: str) -> dict[str, int]:
    counts = {}
    for line in stdout.split("Job stats:")[-1].splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def trainings(stdout: str) -> list[tuple[str, str, str, int]]:
    """(variant, context, setting, seed) of every study_train job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        if re.match(r"(?:local)?rule study_train:", block.strip()):
            wc = dict(kv.split("=") for kv in re.search(r"wildcards: (.*)", block).group(1).split(", "))
            jobs.append((wc["variant"], wc["context"], wc["setting"], int(wc["seed"])))
    return jobs


def schema_defaults() -> dict:
    return yaml.safe_load((STUDIES / "schemas" / "config.schema.yaml").read_text())["properties"]


def test_full_study_dry_run_lists_one_training_per_variant_context_setting_and_seed(tmp_path):
    proc = study(tmp_path, "-n")
    jobs = trainings(proc.stdout)
    settings = schema_defaults()["penalty"]["properties"]["settings"]["default"]
    seeds = range(schema_defaults()["seeds"]["default"])
    expected = {(v, "full", s, seed) for v in ("clean", "confounded") for s in settings for seed in seeds}
    expected |= {("confounded", "cell", "weight_0", seed) for seed in seeds}  # the attribution's cell model
    assert len(jobs) == len(set(jobs)) == len(expected) == 75
    assert set(jobs) == expected
    counts = job_counts(proc.stdout)
    assert counts["variant_crops"] == 2 and counts["confounded_dataset"] == 1
    assert counts["score_attribution"] == 9 and counts["score_evidence"] == 6
    assert counts["score_penalty"] == len(settings) * len(seeds)  # the confounded models
    assert counts["study_summary"] == 1


def test_full_study_dry_runs_through_the_slurm_profile_with_its_gpu_rules_on_the_gpu_partition(tmp_path):
    """The shipped profile, less the conda deployment (no conda here, as in
    test_workflow_dag.test_slurm_profile_dry_run)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for rule in ("study_train", "score_attribution", "score_evidence", "score_penalty"):
        assert profile["set-resources"][rule] == {"slurm_partition": "gpu"}, rule
    del profile["software-deployment-method"]
    folder = tmp_path / "slurm-profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    proc = study(tmp_path / "run", "--profile", str(folder), "-n")
    assert len(trainings(proc.stdout)) == 75


@pytest.mark.parametrize(
    "option, named",
    [
        ("seedz=3", "seedz"),
        ("penalty={settings: {weight_0: {label: w}, typo: {label: t, "
         "train: {attention_penalty: {weigth: 1}}}}}",
         "penalty.settings.typo"),
        ("penalty={settings: {weight_1: {label: w, train: {attention_penalty: {weight: 1}}}}}", "weight_0"),
        ("main_config=no/such.yaml", "main_config"),
    ],
    ids=["unknown-key", "setting-typo", "no-baseline", "missing-main-config"],
)  # fmt: skip
def test_a_bad_studies_config_is_refused_by_name_before_any_job(tmp_path, option, named):
    proc = study(tmp_path, "-n", "--config", option, check=False)
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """The tiny instance, run once for the module (about 5 minutes on 2 cores)."""
    workdir = tmp_path_factory.mktemp("studies")
    study(workdir, "--configfile", str(TINY), "--cores", "2")
    return workdir


def test_tiny_study_runs_every_rule_and_writes_the_tables(tiny_study):
    out = tiny_study / "results" / "validate"
    table = pd.read_csv(out / "table.tsv", sep="\t")
    assert set(zip(table.kind, table.method, table.layer)) == {
        ("confounded", "gradcam", "_blocks.2"),
        ("cell", "gradcam", "_blocks.2"),
    }
    models = pd.read_csv(out / "models.tsv", sep="\t")
    assert set(models.kind) == {"confounded", "cell"} and (models.n_test_cells > 0).all()
    assert models[["test_accuracy", "cell_reliance", "context_reliance"]].apply(np.isfinite).all().all()
    penalty = pd.read_csv(out / "penalty_models.tsv", sep="\t").set_index("setting")
    assert list(penalty.index) == ["weight 0", "weight 1"] and (penalty.variant == "confounded").all()
    for column in ("test_accuracy", "shortcut_free_accuracy", "share_above_0.5_integrated_gradients"):
        assert penalty[column].between(0, 1).all(), column
    assert (penalty.epochs_run == 2).all()
    summary = (out / "penalty_summary.md").read_text()
    assert "| weight 1 |" in summary and "meets the bar" in summary
    assert "| gradcam | _blocks.2 |" in (out / "summary.md").read_text()
    curve = pd.read_csv(out / "evidence" / "curve.tsv", sep="\t")
    assert set(curve.kind) == {"confounded"} and len(curve) == 8
    assert (out / "evidence" / "curve.png").stat().st_size > 10_000
    jobs = pd.read_csv(out / "jobs.tsv", sep="\t")
    assert len(jobs) == 3 and (jobs.s > 0).all()  # weight 0 (full, cell) and weight 1
    # the nested main-workflow run: its own project, one site per well
    sheet = pd.read_csv(out / "confounded" / "config" / "samples.tsv", sep="\t")
    assert len(sheet) == 16 and set(sheet.site) == {1}
    assert not (tiny_study / "docs").exists()  # docs: null


def test_tiny_study_derives_the_cell_context_and_the_shortcut_free_crops_of_the_same_cells(tiny_study):
    out = tiny_study / "results" / "validate"
    full = pd.read_csv(out / "confounded" / "wells.tsv", sep="\t", dtype=str)
    cell = pd.read_csv(out / "confounded" / "cell" / "wells.tsv", sep="\t", dtype=str)
    free = pd.read_csv(out / "shortcut_free" / "wells.tsv", sep="\t", dtype=str)
    assert list(cell.well) == list(full.well) and set(free.well) == set(full[full.split == "test"].well)
    differ = []
    for row in free.itertuples():
        confounded = CropStore.open(full.set_index(["plate", "well"]).loc[(row.plate, row.well), "store"])
        clean = CropStore.open(row.store)
        pd.testing.assert_frame_equal(clean.cells, confounded.cells)
        np.testing.assert_array_equal(clean.masks, confounded.masks)
        differ.append(not np.array_equal(clean.images, confounded.images))
    # the debris follows the treatment: gone from the wells that had it, none elsewhere
    assert any(differ), "no test well lost its debris"
    first = CropStore.open(full.store[0]), CropStore.open(cell.store[0])
    np.testing.assert_array_equal(first[0].masks, first[1].masks)
    assert first[1].normalization["context"] == "cell"


def test_a_plot_option_reruns_the_summary_and_retrains_nothing(tiny_study):
    changed = ["--configfile", str(TINY), "--config", "plot={dpi: 72}"]
    counts = job_counts(study(tiny_study, *changed, "-n").stdout)
    assert set(counts) == {"study_summary", "all"}, counts
    figure = tiny_study / "results" / "validate" / "evidence" / "curve.png"
    before = figure.stat().st_size
    models = sorted((tiny_study / "results" / "validate" / "models").glob("*/model.pt"))
    stamps = [m.stat().st_mtime_ns for m in models]
    study(tiny_study, *changed, "--cores", "1")
    assert [m.stat().st_mtime_ns for m in models] == stamps
    assert figure.stat().st_size < before  # redrawn at the lower resolution
    # and the same config again is up to date
    again = study(tiny_study, *changed, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_setting_change_retrains_its_models_only(tiny_study):
    """Reuse comes from Snakemake: a setting's params changed, its model and what reads it."""
    changed = json.dumps(
        {
            "variants": ["confounded"],
            "settings": {
                "weight_0": {"label": "weight 0"},
                "weight_1": {"label": "weight 1", "train": {"attention_penalty": {"weight": 2.0}}},
            },
        }
    )
    proc = study(tiny_study, "--configfile", str(TINY), "--config", f"penalty={changed}", "-n")
    assert trainings(proc.stdout) == [("confounded", "full", "weight_1", 0)]
    assert job_counts(proc.stdout)["score_penalty"] == 1


def test_the_studies_workflow_lints_clean(tmp_path):
    out = study(tmp_path, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr
