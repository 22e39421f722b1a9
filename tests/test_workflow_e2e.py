"""The whole workflow, for real, on the bundled mini dataset: raw z-stacks to report.

One Snakemake run (session-scoped, conftest.mini_run: through profiles/slurm where a SLURM
cluster is up, as in CI, else local) in a temporary project; the tests read what it wrote.
Real Cellpose training and segmentation, real PyTorch training, real Grad-CAM.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SNAKEMAKE, mini_sheet_rows, run_snakemake
from gradcamo.columns import UNDEFINED_REASONS
from gradcamo.config import load_config
from gradcamo.gradcam import gradcamo_score
from gradcamo.store import CropStore

pytestmark = pytest.mark.workflow
MINI_CONFIG = load_config(Path(__file__).resolve().parents[1] / ".test" / "config" / "config.yaml")


@pytest.fixture(scope="module")
def project(mini_run):
    """The session's run of the mini workflow (conftest.mini_run: SLURM in CI, else local)."""
    return mini_run


@pytest.fixture(scope="module")
def wells():
    sheet = pd.DataFrame(mini_sheet_rows())
    return sheet.drop_duplicates(["plate", "well"])[["plate", "well", "treatment"]]


def test_rerun_has_nothing_to_do(project):
    proc = run_snakemake(project, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_qc_for_every_well(project, wells):
    for plate, well in zip(wells.plate, wells.well):
        qc = pd.read_parquet(project / f"results/qc/{plate}/{well}.parquet")
        assert set(qc.channel) == {"DNA", "ER", "RNA", "AGP", "Mito"}
        assert qc.Metadata_Site.nunique() == 3
        assert ((qc.saturated_fraction >= 0) & (qc.saturated_fraction <= 1)).all()
        assert all(len(f) >= 12 for f in qc.focus_per_z)
    for plate in wells.plate.unique():
        image = matplotlib.image.imread(project / f"results/qc/{plate}.layout.png")
        assert image.shape[0] > 200 and image.std() > 0
        correlation = pd.read_csv(
            project / f"results/qc/{plate}.channel_correlation.tsv", sep="\t", index_col="channel"
        )
        assert list(correlation.columns) == ["DNA", "ER", "RNA", "AGP", "Mito"]
        np.testing.assert_allclose(np.diag(correlation), 1.0, atol=1e-9)
        np.testing.assert_allclose(correlation, correlation.T, atol=1e-12)
        assert (correlation.abs() <= 1 + 1e-9).all().all()
        image = matplotlib.image.imread(project / f"results/qc/{plate}.channel_correlation.png")
        assert image.shape[0] > 200 and image.std() > 0


def test_segmentation_reaches_ap_on_held_out_sites(project):
    scores = json.loads((project / "results/segmentation/scores.json").read_text())
    table = pd.read_parquet(project / "results/segmentation/scores.parquet")
    held_out = table[~table.used_for_training]
    assert len(held_out) >= 20
    assert held_out.ap50.mean() >= 0.8, held_out[["plate", "well", "site", "ap50", "f1"]]
    assert scores["held_out"]["ap50"] == pytest.approx(held_out.ap50.mean())
    for plate in ("P1", "P2"):
        qc = pd.read_parquet(project / f"results/segmentation/qc/{plate}.parquet")
        assert len(qc) == 24 and qc.n_cells.between(10, 30).all()
        assert not qc.flagged.any(), qc[qc.flagged]


def test_crops_for_every_well(project, wells):
    total = 0
    for plate, well, treatment in wells.itertuples(index=False):
        store = CropStore.open(project / f"results/crops/{plate}/{well}")
        assert store.images.shape[1:] == (5, 12, 32, 32)
        assert len(store) == len(store.cells) == len(store.masks)
        if len(store):
            assert set(store.cells.Metadata_Treatment) == {treatment}
            assert (store.masks == 1).any(axis=(1, 2, 3)).all(), "every crop holds its cell"
        total += len(store)
    assert total >= 300


def test_training_runs_and_fits(project):
    metrics = json.loads((project / "results/train/metrics.json").read_text())
    history = pd.read_csv(project / "results/train/history.tsv", sep="\t")
    assert len(history) >= 3 and history.train_loss.notna().all()
    assert history.train_loss.iloc[-3:].mean() < history.train_loss.iloc[0], "training loss falls"
    assert set(metrics["splits"]) == {"train", "val", "test"}
    assert metrics["splits"]["test"]["n_cells"] >= 50


def test_training_audits_its_validation_cells_as_the_profile_stage_does(project):
    """Every epoch the train rule predicted its validation cells from the cell alone and
    from the context alone; for the kept epoch that is what the profile stage's audit of the
    same model finds on the same cells (the same fill, margin and seeds; the training keeps
    the counterfactual crops as float16, so a borderline cell may flip)."""
    history = pd.read_csv(project / "results/train/history.tsv", sep="\t")
    metrics = json.loads((project / "results/train/metrics.json").read_text())
    for column in ("val_cell_accuracy", "val_context_accuracy"):
        assert history[column].between(0, 1).all(), history[column]
    best = history.loc[history.epoch == metrics["best_epoch"]].iloc[0]
    assert best.val_accuracy == pytest.approx(metrics["splits"]["val"]["accuracy"])
    split = pd.read_csv(project / "results/split/wells.tsv", sep="\t")
    val = pd.concat(
        pd.read_parquet(project / f"results/profiles/{r.plate}/{r.well}.parquet")
        for r in split[split.split == "val"].itertuples()
    )
    assert len(val) == metrics["splits"]["val"]["n_cells"] <= 256  # all of them are audited
    for column, audited in (
        ("Metadata_PredictedFromCell", best.val_cell_accuracy),
        ("Metadata_PredictedFromContext", best.val_context_accuracy),
    ):
        profiled = float((val[column] == val.Metadata_Treatment).mean())
        assert abs(profiled - audited) <= 0.02, (column, profiled, audited)


def test_training_learns_above_chance(project):
    metrics = json.loads((project / "results/train/metrics.json").read_text())
    test = metrics["splits"]["test"]
    chance = test["chance_level"]
    assert test["n_cells"] >= 50
    assert test["accuracy"] >= chance + 0.25, f"test accuracy {test['accuracy']:.2f} vs chance {chance:.2f}"


def test_every_cell_has_a_profile_and_gradcamo(project, wells):
    split = pd.read_csv(project / "results/split/wells.tsv", sep="\t")
    assert set(split.split) == {"train", "val", "test"}
    assert not split.duplicated(["plate", "well"]).any()
    for plate, well, _ in wells.itertuples(index=False):
        store = CropStore.open(project / f"results/crops/{plate}/{well}")
        table = pd.read_parquet(project / f"results/profiles/{plate}/{well}.parquet")
        assert len(table) == len(store)
        features = [c for c in table.columns if not c.startswith("Metadata_")]
        assert len(features) == 1280
        assert (table[features].dtypes == np.float32).all()
        assert np.isfinite(table[features].to_numpy()).all()
        score = table.Metadata_GradCAMO
        assert ((score >= 0) & (score <= 1) | score.isna()).all()
        shares = table[
            [
                "Metadata_GradCAMO",
                "Metadata_Attribution_NeighbourShare",
                "Metadata_Attribution_BackgroundShare",
            ]
        ].dropna()
        # Every cell has a score or a reason for none (no evidence for its map to place).
        scored = table.Metadata_GradCAMO.notna()
        assert len(shares) == scored.sum()
        assert table.Metadata_GradCAMO_Undefined[scored].isna().all()
        assert table.Metadata_GradCAMO_Undefined[~scored].isin(list(UNDEFINED_REASONS)).all()
        evidence = table.Metadata_AttributionEvidence
        assert evidence.notna().all() and evidence.between(-1, 1).all()
        assert (evidence[scored] >= MINI_CONFIG["profile"]["min_evidence"]).all()
        log = (project / f"logs/profile/{plate}/{well}.log").read_text()
        assert "differs" not in log and "WARNING" not in log, log[-2000:]
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-4)
        masks = np.asarray(store.masks)
        np.testing.assert_allclose(
            table.Metadata_GradCAMO_Uniform, (masks == 1).reshape(len(masks), -1).mean(1), rtol=1e-6
        )
        assert ((table.Metadata_Probability > 0) & (table.Metadata_Probability <= 1)).all()
        cams = np.load(project / f"results/profiles/{plate}/{well}.attributions.npy", mmap_mode="r")
        assert cams.shape == (len(store), 12, 32, 32)
        # the shuffled baseline: each cell's mask on the next cell's map (saved as float16)
        if len(store) > 1:
            expected = gradcamo_score(np.roll(np.asarray(cams, np.float32), -1, axis=0), masks)
            np.testing.assert_allclose(
                table.Metadata_GradCAMO_Shuffled, expected, rtol=1e-2, atol=1e-3, equal_nan=True
            )


def test_aggregate_tables_and_summary(project):
    cells = pd.read_parquet(project / "results/aggregate/cells.parquet")
    wells = pd.read_parquet(project / "results/aggregate/wells.parquet")
    sphered = pd.read_parquet(project / "results/aggregate/wells_sphered.parquet")
    activity = pd.read_parquet(project / "results/aggregate/map.parquet")
    summary = json.loads((project / "results/aggregate/summary.json").read_text())
    assert summary["cells"] == len(cells) and summary["wells"] == len(wells) == len(sphered)
    assert 0 <= summary["gradcamo"]["share_above"] <= 1
    assert summary["gradcamo"]["n_scored"] > 0.5 * len(cells)
    assert set(summary["accuracy"]) == {"train", "val", "test"}
    # how the model was trained to look at the cell: not at all, by default
    assert summary["training"]["attention_penalty"]["weight"] == 0
    assert summary["training"]["context_swap"]["probability"] == 0
    # and on what: a run that rounds differently can be told from one that should not
    assert summary["training"]["numerics"]["device"].startswith("CPU")
    assert summary["training"]["numerics"]["torch"] == torch.__version__
    attention = summary["attention"]
    assert set(attention) == {"cell", "neighbours", "background", "cell_if_uniform"}
    assert attention["cell"] == pytest.approx(summary["gradcamo"]["mean"])
    regions = attention["cell"] + attention["neighbours"] + attention["background"]
    assert regions == pytest.approx(1.0, abs=1e-4)
    assert 0 < attention["cell_if_uniform"] < 0.5
    features = [c for c in sphered.columns if not c.startswith("Metadata_")]
    controls = sphered[sphered.Metadata_Treatment == "DMSO"][features].to_numpy()
    assert np.abs(controls.mean(axis=0)).max() < 1e-3, "sphering centres the controls"
    treated = activity[(activity.level == "well") & (activity.split == "all")]
    assert set(treated.treatment) == {"CompoundA", "CompoundB", "CompoundC"}
    assert treated.mean_average_precision.between(0, 1).all()
    assert {"gradcamo_above", "gradcamo_below"} <= set(activity.subset)


def test_every_cell_is_audited(project):
    cells = pd.read_parquet(project / "results/aggregate/cells.parquet")
    for column in ("Metadata_CellReliance", "Metadata_ContextReliance"):
        assert cells[column].notna().all() and cells[column].between(-1, 1).all()
    classes = set(cells.Metadata_Treatment)
    for column in ("Metadata_PredictedFromCell", "Metadata_PredictedFromContext"):
        assert set(cells[column]) <= classes
    summary = json.loads((project / "results/aggregate/summary.json").read_text())
    assert summary["attribution"]["attribution_method"] == "integrated_gradients"
    assert summary["attribution"]["smoothing_sigma"] == 0.0
    audit = summary["audit"]
    assert set(audit["by_split"]) == {"train", "val", "test"}
    for split, entry in audit["by_split"].items():
        group = cells[cells.Metadata_Split == split]
        assert entry["n_cells"] == len(group)
        assert entry["cell_only"] == pytest.approx(
            (group.Metadata_PredictedFromCell == group.Metadata_Treatment).mean()
        )
        assert entry["context_only"] == pytest.approx(
            (group.Metadata_PredictedFromContext == group.Metadata_Treatment).mean()
        )
        assert -1 <= entry["spearman_gradcamo_cell_reliance"] <= 1
    assert set(audit["by_treatment"]) == classes
    # The default map against the audit, with margins that hold over runs: two CI trainings
    # of seed 0 that rounded differently gave test Spearman 0.54 and 0.29, mean Grad-CAMO
    # 0.42 and 0.46 against 0.07 for a uniform map (docs/audit.md, the audit table).
    assert audit["by_split"]["test"]["spearman_gradcamo_cell_reliance"] > 0.1, audit["by_split"]
    attention = summary["attention_by_split"]["test"]
    assert attention["cell"] > 3 * attention["cell_if_uniform"], attention
    # The map follows each cell's own shape, not only the centre of the crop where every cell
    # sits: above the same masks scored on other cells' maps (the CI run's model: 0.405
    # against 0.351; README, "The shuffled baseline").
    gradcamo = summary["gradcamo_by_split"]["test"]
    assert gradcamo["shuffled"]["share_above"] is not None
    assert gradcamo["mean"] > gradcamo["shuffled"]["mean"], gradcamo


def test_gradcamo_is_read_per_class_over_cells_with_evidence(project):
    cells = pd.read_parquet(project / "results/aggregate/cells.parquet")
    summary = json.loads((project / "results/aggregate/summary.json").read_text())
    test = cells[cells.Metadata_Split == "test"]
    by_class = summary["gradcamo_by_predicted_class"]
    assert set(by_class) == set(test.Metadata_Predicted)
    for name, entry in by_class.items():
        group = test[test.Metadata_Predicted == name]
        assert entry["n_cells"] == len(group) and entry["n_scored"] == group.Metadata_GradCAMO.notna().sum()
        assert sum(entry["undefined"].values()) == entry["n_cells"] - entry["n_scored"]
    assert set(summary["gradcamo_by_treatment"]) == set(test.Metadata_Treatment)
    undefined = summary["gradcamo_by_split"]["test"]["undefined"]
    assert sum(undefined.values()) == test.Metadata_GradCAMO.isna().sum()


def test_model_randomisation_is_reported_beside_the_trained_model(project):
    check = json.loads((project / "results/aggregate/summary.json").read_text())["checks"]["randomisation"]
    rows = pd.read_csv(project / "results/checks/randomisation.tsv", sep="\t")
    settings = MINI_CONFIG["checks"]["randomisation"]
    # the full cascade of b0: classifier, head, 7 stages of blocks, the stem
    assert len(rows) == 1 + settings["seeds"] * 10 and rows.level.iloc[-1] == "stem"
    assert (rows.n_cells == settings["cells"]).all()
    assert check["trained"]["share_above"] == pytest.approx(rows.share_above[rows.depth == 0].item())
    low, high = check["randomised"]["share_above_range"]
    assert low == pytest.approx(rows.share_above[rows.depth == rows.depth.max()].min())
    # Re-initialising the whole network changes the map (Adebayo et al.'s sanity check).
    assert rows.map_spearman[rows.depth == rows.depth.max()].max() < 0.9, rows
    assert check["within_spread"] == (check["trained"]["share_above"] <= high)


def test_planted_shortcut_control_runs_and_says_whether_it_has_a_shortcut_to_catch(project):
    """Markers planted in one treatment's context, a copy fine-tuned on them, profiled with the
    run's map and audit. On the mini run's model the copy hardly learns them in a few epochs
    (docs/audit.md, "The planted-shortcut control"): the control must then say it is
    inconclusive rather than call the run clean; where it learns them, it says what caught them
    (that detection is tested in test_model_checks)."""
    planted = json.loads((project / "results/checks/planted.json").read_text())
    summary = json.loads((project / "results/aggregate/summary.json").read_text())
    assert summary["checks"]["planted"] == planted
    assert planted["treatment"] == "CompoundA"  # the first class after the control
    assert planted["markers"]["planted_test_crops"] > 0.9 * planted["trained"]["n_cells"]
    settings = MINI_CONFIG["checks"]["planted"]
    assert planted["trained"]["n_cells"] == planted["fine_tuned"]["n_cells"] == settings["test_cells"]
    strength = planted["fine_tuned"]["accuracy"] - planted["fine_tuned_accuracy_without_markers"]
    assert planted["marker_strength"] == pytest.approx(strength)
    assert planted["learned"] == (strength > settings["margin"])
    if not planted["learned"]:
        assert planted["caught_by_audit"] is None and planted["caught_by_gradcamo"] is None
    else:
        change = planted["fine_tuned"]["context_reliance"] - planted["trained"]["context_reliance"]
        assert planted["caught_by_audit"] == (change > settings["margin"])
    cells = pd.read_parquet(project / "results/checks/planted_cells.parquet")
    assert set(cells.Metadata_Model) == {"trained", "fine_tuned"}
    assert cells.Metadata_AttributionEvidence.notna().all()


def test_crops_do_not_leak_the_treatment_outside_cells(project):
    """Plate normalisation from control wells: the background alone says nothing of the
    treatment of held-out wells (per-site normalisation gave 0.63 here, chance 0.25)."""
    leak = json.loads((project / "results/aggregate/summary.json").read_text())["audit"]["background_leak"]
    assert leak["n_held_out"] >= 50 and leak["features"] == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert leak["accuracy"] <= leak["chance"] + 0.10, leak


@pytest.mark.parametrize(
    "name",
    [
        "umap_cells",
        "umap_wells",
        "map",
        "gradcamo_histogram",
        "gradcamo_by_treatment",
        "attribution_gallery",
        "training_curves",
        "audit",
    ],
)
def test_figures_are_images(project, name):
    image = matplotlib.image.imread(project / f"results/figures/{name}.png")
    assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 200
    assert image[..., :3].std() > 0.01, "a figure is not a blank canvas"


def test_report(project):
    run_snakemake(project, "--report", "report.html")
    html = (project / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "Grad-CAMO" in html
    summary = json.loads((project / "results/aggregate/summary.json").read_text())
    accuracy = summary["accuracy"]["test"]["accuracy"]
    assert "The answer of this run" in html and f"{accuracy:.3f}".rstrip("0") in html
    for line in ("Per predicted class", "Model randomisation:", "Planted shortcut:"):
        assert line in html, line


def test_deployed_from_a_git_tag_a_phenix_export_gives_the_same_crops(project, wells, tmp_path):
    """The catalog's way, end to end: this workflow committed to a git repository and tagged
    at its version, used as a Snakemake ``module`` from that local git source in an empty
    project folder (nothing of the clone on its paths: the library and schemas are copied out
    of the tag), on the mini dataset's plate P1 exported per plane in Opera Phenix naming with its
    Harmony index (LZW planes, channel numbers not in stain order) and its sheet written by
    ``gradcamo-sheet`` from the export and a JUMP-style plate map. With the OME-TIFF run's
    Cellpose model, every well's crops, masks and cell table are the OME-TIFF run's, bit for
    bit."""
    import subprocess
    import sys

    import layouts
    from conftest import REPO, write_project
    from gradcamo import __version__
    from gradcamo.samples import read_sample_sheet

    source = tmp_path / "gradcamo"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in (
        f for f in files if not f.startswith(("resources/", "tests/fixtures/real/")) and (REPO / f).is_file()
    ):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"], ["tag", f"v{__version__}"]):
        subprocess.run([*git, *args], cwd=source, check=True)

    # Plate P1 (8 wells, 24 sites): the path of a per-plane export through the workflow is
    # the same for every plate, and one plate keeps CI's time (16 wells took 187 s).
    samples = read_sample_sheet(REPO / "resources/mini/samples.tsv").query("plate == 'P1'")
    wells = wells[wells.plate == "P1"]
    indexes = layouts.export_harmony(layouts.read_sites(samples), tmp_path / "export")
    layouts.platemap(samples).to_csv(tmp_path / "platemap.txt", sep="\t", index=False)
    workdir = write_project(
        tmp_path / "project",
        [],
        {
            "images.layout": "harmony",
            "images.channel_names": layouts.CHANNEL_NAMES["harmony"],
            "segmentation.model": str(project / "results/segmentation/model/cellpose_model"),
            "segmentation.train.sites": [],
        },
    )
    (workdir / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\n'
        "module gradcamo:\n"
        f'    snakefile:\n        "git+file://{source}/workflow/Snakefile@v{__version__}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from gradcamo\n"
    )
    built = subprocess.run(
        [
            str(Path(sys.executable).parent / "gradcamo-sheet"),
            *map(str, indexes.values()),
            "--platemap",
            str(tmp_path / "platemap.txt"),
            "--config",
            str(workdir / "config/config.yaml"),
            "-o",
            str(workdir / "config/samples.tsv"),
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "1 plate(s), 8 wells, 24 fields" in built.stdout and "missing" not in built.stdout
    targets = [f"results/crops/{p}/{w}/store.json" for p, w in zip(wells.plate, wells.well)]
    # Snakemake 9.27's local git source cannot compare scripts' modification times (its
    # LocalGitFile.join takes no SourceFile); a tag's scripts do not change, so the "code"
    # trigger is left out here. A module from github(...) needs no such flag.
    run = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *targets, "--rerun-triggers", "mtime", "params", "input", "software-env"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert (workdir / "results/images/P1.parquet").is_file()
    log = (workdir / "logs/crops/P1/B02.log").read_text()
    assert f"gradcamo {__version__} from {(workdir / '.snakemake' / 'gradcamo').resolve()}" in log
    for plate, well in zip(wells.plate, wells.well):
        ours, theirs = workdir / f"results/crops/{plate}/{well}", project / f"results/crops/{plate}/{well}"
        for array in ("images.npy", "masks.npy"):
            np.testing.assert_array_equal(np.load(ours / array), np.load(theirs / array))
        pd.testing.assert_frame_equal(
            pd.read_parquet(ours / "cells.parquet"), pd.read_parquet(theirs / "cells.parquet")
        )


def test_changing_a_resource_reruns_nothing(project):
    """Threads, memory, runtime and GPUs live in config key ``resources`` and never in a
    rule's params: a finished run stays finished when they change."""
    import yaml

    path = project / "config" / "config.yaml"
    before = path.read_text()
    config = yaml.safe_load(before)
    config.setdefault("resources", {})
    for rule, change in {
        "train": {"runtime": 999, "threads": 1, "mem_mb": 12345, "gpu": 0},
        "segment": {"threads": 2, "runtime": 7},
        "profile": {"mem_mb": 9999},
        "crops": {"runtime": 1},
    }.items():
        config["resources"][rule] = {**config["resources"].get(rule, {}), **change}
    try:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = run_snakemake(project, "-n")
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    finally:
        path.write_text(before)
