"""The workflow's DAG on the bundled mini dataset: job counts per rule, lint, SLURM profile."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, mini_sheet_rows, run_snakemake, write_project

N_WELLS = 16  # 2 plates × 8 wells
EXPECTED_JOBS = {
    "qc_well": N_WELLS,
    "qc_plate": 2,
    "channel_correlation": 2,
    "train_segmentation": 1,
    "segment": N_WELLS,
    "score_segmentation": 1,
    "segmentation_qc": 2,
    "mask_review": 2,
    "crop_normalization": 2,
    "crops": N_WELLS,
    "split": 1,
    "train": 1,
    "profile": N_WELLS,
    "all": 1,
}


def _job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    counts = {}
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture
def mini_project(tmp_path):
    return write_project(tmp_path, mini_sheet_rows())


def test_dry_run_job_counts(mini_project):
    proc = run_snakemake(mini_project, "-n")
    counts = _job_counts(proc.stdout)
    for rule, n in EXPECTED_JOBS.items():
        assert counts.get(rule) == n, f"{rule}: {counts.get(rule)} jobs, expected {n}\n{counts}"


def test_mini_config_dry_runs_in_repo():
    """`.test/` (the mini dataset's config and sheet, `make demo`) forms a valid DAG."""
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--quiet", "rules", "--directory", ".test"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _job_counts(proc.stdout).get("train") == 1


def test_screen_template_dry_runs_on_the_mini_images(tmp_path):
    """config/config.yaml (the template for a real screen: paper-sized crops, GPU rules, the
    layer chosen by resolution) is valid and builds the same DAG on the bundled images."""
    template = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert template["crops"]["shape"] == [21, 128, 128]
    assert template["profile"]["target_resolution"] is not None
    gpu_rules = ("train_segmentation", "segment", "train", "profile")
    assert all(template["resources"][rule]["gpu"] == 1 for rule in gpu_rules)
    project = write_project(tmp_path, mini_sheet_rows())  # the mini sheet, absolute paths
    (project / "config" / "config.yaml").write_text(
        yaml.safe_dump({**template, "samples": "config/samples.tsv"}, sort_keys=False)
    )
    counts = _job_counts(run_snakemake(project, "-n").stdout)
    assert counts.get("train") == 1 and counts.get("profile") == N_WELLS
    assert "train_segmentation" not in counts  # cyto3, no training of Cellpose


def test_screen_template_sheet_is_refused_by_name_until_edited():
    """In the repository root the template's example sheet names images that do not exist:
    the first is refused by sheet line and path before any job."""
    proc = subprocess.run([SNAKEMAKE, "-n", "--quiet"], cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "samples.tsv line 2" in out and "/data/screen/Plate01/B02_s1.ome.tif" in out, out[-3000:]


def test_lint_is_clean():
    proc = subprocess.run(
        [SNAKEMAKE, "--lint", "--directory", ".test"], cwd=REPO, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in out, out[-4000:]


@pytest.mark.parametrize(
    "command",
    [
        ["snakefmt", "--check", "workflow/Snakefile", "workflow/rules", "workflow/studies"],
        ["ruff", "check", "workflow", "bench", "tools", "tests"],
        ["ruff", "format", "--check", "workflow", "bench", "tools", "tests"],
    ],
    ids=["snakefmt", "ruff-check", "ruff-format"],
)
def test_code_is_formatted_and_lint_clean(command):
    """What `make lint` runs beside snakemake --lint (pinned in requirements.txt)."""
    tool = str(Path(SNAKEMAKE).parent / command[0])
    proc = subprocess.run([tool, *command[1:]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_slurm_profile_dry_run(mini_project):
    """`snakemake --profile profiles/slurm -n` builds the DAG with the SLURM executor.

    Snakemake asks `conda info` as soon as a profile names the conda deployment method, and
    conda cannot be installed here, so this dry-runs a copy of the slurm profile without that
    one key; everything else (executor, resources, retries) is the shipped profile.
    """
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["software-deployment-method"] == "conda"
    # Partitions only: threads, memory, runtime and GPUs come from the config.
    assert profile["set-resources"]["train"] == {"slurm_partition": "gpu"}
    assert "set-threads" not in profile and "default-resources" not in profile
    del profile["software-deployment-method"]
    folder = mini_project / "slurm-profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    proc = run_snakemake(mini_project, "--profile", str(folder), "-n")
    counts = _job_counts(proc.stdout)
    assert counts.get("train") == 1 and counts.get("segment") == N_WELLS


def test_context_cell_and_other_maps_form_the_same_dag(tmp_path):
    """crops.context: cell and another attribution method change what jobs compute, not
    which jobs run."""
    project = write_project(
        tmp_path,
        mini_sheet_rows(),
        {
            "crops.context": "cell",
            "profile.attribution_method": "layercam",
            "profile.target_resolution": 8,
        },
    )
    counts = _job_counts(run_snakemake(project, "-n").stdout)
    for rule, n in EXPECTED_JOBS.items():
        assert counts.get(rule) == n, (rule, counts)


def test_a_plate_without_controls_is_refused_by_name(tmp_path):
    rows = [r for r in mini_sheet_rows() if not (r["plate"] == "P2" and r["treatment"] == "DMSO")]
    sites = {"segmentation.train.sites": ["P1/B02/1", "P1/C03/1", "P2/C03/1"]}
    project = write_project(tmp_path, rows, sites)
    proc = run_snakemake(project, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "crops.normalization.reference" in out and "'P2'" in out and "'all'" in out
    project = write_project(tmp_path / "all", rows, {**sites, "crops.normalization.reference": "all"})
    assert _job_counts(run_snakemake(project, "-n").stdout)["crop_normalization"] == 2


def test_training_sites_without_labels_name_the_key_whatever_the_model(tmp_path):
    """A built-in model with segmentation.train.sites left naming sites without labels
    stopped with Snakemake's own "Input and output files have to be specified as strings or
    lists of strings" (the train_segmentation rule's labels were NaN): the key is named."""
    rows = [{k: v for k, v in r.items() if k != "labels"} for r in mini_sheet_rows()]
    project = write_project(tmp_path, rows, {"segmentation.model": "cyto3"})
    proc = run_snakemake(project, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "have to be specified as strings" not in out
    assert "config key 'segmentation.train.sites': site 'P1/B02/1'" in out
    assert "has no 'labels'" in out and "segmentation.model is 'cyto3': empty the list" in out


def test_a_per_plane_export_is_indexed_once_per_plate(tmp_path):
    """A Harmony export of the mini dataset: one index_images job per plate before any job
    that reads images, and every reading job depends on its plate's index, not on the 5,760
    plane files."""
    import layouts
    from gradcamo.samples import read_sample_sheet

    samples = read_sample_sheet(REPO / "resources/mini/samples.tsv")
    indexes = layouts.export_harmony(layouts.read_sites(samples), tmp_path / "export")
    rows = [
        {
            **{k: r[k] for k in ("plate", "well", "site", "treatment", "concentration", "control")},
            "image": str(indexes[r["plate"]]),
        }
        for r in mini_sheet_rows()
    ]
    project = write_project(
        tmp_path / "project",
        rows,
        {
            "images.layout": "harmony",
            "images.channel_names": layouts.CHANNEL_NAMES["harmony"],
            "segmentation.model": "cyto3",
            "segmentation.train.sites": [],
        },
    )
    proc = run_snakemake(project, "-n", "--quiet", "rules")
    counts = _job_counts(proc.stdout)
    assert counts["index_images"] == 2 and counts["segment"] == N_WELLS and "train_segmentation" not in counts
    detail = run_snakemake(project, "-n", "results/crops/P1/B02/store.json").stdout
    assert "results/images/P1.parquet" in detail and ".tiff" not in detail
    # A channel name the export does not have is named when the plate is indexed.
    (project / "config/config.yaml").write_text(
        (project / "config/config.yaml").read_text().replace("HOECHST 33342", "DAPI")
    )
    proc = run_snakemake(project, "--cores", "1", "results/images/P1.parquet", check=False)
    log = (project / "logs/index_images/P1.log").read_text()
    assert proc.returncode != 0 and "configured channel 'DNA' is not in the export's channels" in log
    assert not (project / "results/images/P1.parquet").exists()
