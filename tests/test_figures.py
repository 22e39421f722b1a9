"""Figures: each one a readable, non-empty PNG; UMAP on tiny inputs; the Grad-CAM gallery."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from gradcamo import figures
from gradcamo.aggregate import read_profile_tables, well_profiles
from gradcamo.errors import InputError
from gradcamo.evaluation import activity_table
from gradcamo.sphering import sphere_profiles
from synthetic_profiles import CHANNELS, CONTROL, CROP, write_profiles


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig")
    cells, _ = read_profile_tables(write_profiles(root, crops=True))
    return root, cells


def assert_png(path, min_size=(200, 300)):
    """A real image: readable, at least ``min_size`` pixels (H, W), not one flat colour."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    assert image[..., :3].std() > 0.01
    return image


# ----------------------------------------------------------------------------- UMAP


@pytest.mark.parametrize("n", [3, 4, 6])
def test_umap_handles_tiny_inputs(n):
    features = np.random.default_rng(0).normal(size=(n, 40))
    embedding = figures.umap_embedding(features, n_neighbors=15, seed=0)
    assert embedding.shape == (n, 2) and np.isfinite(embedding).all()


def test_umap_is_seeded_and_refuses_too_few():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (40, 80)), rng.normal(4, 1, (40, 80))])
    first = figures.umap_embedding(features, n_neighbors=10, seed=3, pca_components=20)
    again = figures.umap_embedding(features, n_neighbors=10, seed=3, pca_components=20)
    np.testing.assert_allclose(first, again)
    # Two well-separated groups stay separated: each point's nearest neighbour is in its group.
    distances = np.linalg.norm(first[:, None] - first[None], axis=-1) + np.eye(80) * 1e9
    group = np.repeat([0, 1], 40)
    assert (group[distances.argmin(1)] == group).mean() > 0.95
    with pytest.raises(InputError, match="at least 3 profiles, got 2"):
        figures.umap_embedding(features[:2])


def test_subsample_and_extremes():
    assert list(figures.subsample(5, 10)) == list(range(5))
    picked = figures.subsample(100, 10, seed=1)
    assert len(picked) == 10 and len(set(picked)) == 10 and (np.diff(picked) > 0).all()
    scores = np.array([0.5, np.nan, 0.1, 0.9, 0.3, np.nan, 0.7])
    low, high = figures.select_extremes(scores, 2)
    assert list(low) == [2, 4] and list(high) == [3, 6]
    low, high = figures.select_extremes(scores[:3], 6)  # two finite scores: split, no overlap
    assert set(low) | set(high) == {0, 2} and not set(low) & set(high)


# ----------------------------------------------------------------------------- figures


def test_umap_figures(project, tmp_path):
    _, cells = project
    test = sphere_profiles(cells, CONTROL)
    test = test[test.Metadata_Split == "test"]
    embedding = figures.umap_embedding(test.filter(like="emb_").to_numpy(), n_neighbors=15)
    path = tmp_path / "umap_cells.png"
    figures.save_figure(
        figures.umap_cells_figure(embedding, test.Metadata_Treatment, test.Metadata_GradCAMO), path
    )
    assert_png(path, (500, 1200))
    figures.save_figure(
        figures.umap_cells_figure(None, [], [], note="too few cells (n=1)"), tmp_path / "none.png"
    )
    assert_png(tmp_path / "none.png")

    wells = sphere_profiles(well_profiles(cells), CONTROL, what="wells")
    embedding = figures.umap_embedding(wells.filter(like="emb_").to_numpy())
    figures.save_figure(
        figures.umap_wells_figure(embedding, wells.Metadata_Treatment, wells.Metadata_Split),
        tmp_path / "umap_wells.png",
    )
    assert_png(tmp_path / "umap_wells.png")


def test_gradcamo_figures(project, tmp_path):
    _, cells = project
    scores = cells.Metadata_GradCAMO.to_numpy()
    assert np.isnan(scores).any()
    figures.save_figure(figures.gradcamo_histogram_figure(scores, 0.5), tmp_path / "hist.png")
    assert_png(tmp_path / "hist.png")
    # With the shuffled baseline: its outline and its own share above the threshold, over
    # the cells with a score.
    null = np.where(np.arange(len(scores)) % 2 == 0, 0.9, 0.1)
    scored = np.isfinite(scores)
    fig = figures.gradcamo_histogram_figure(scores, 0.5, shuffled=null)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert f"on another cell's map: {100 * (null[scored] > 0.5).mean():.1f}%" in texts, texts
    assert "its mask on another cell's map" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # One panel per predicted class, each counting its cells without a score, by reason.
    predicted = np.where(np.arange(len(scores)) < len(scores) // 2, "DMSO", "drug")
    reasons = np.where(scored, None, "baseline_is_class").astype(object)
    fig = figures.gradcamo_histogram_figure(scores, 0.5, None, null, predicted, reasons, "test cells")
    assert [ax.get_title() for ax in fig.axes] == ["predicted DMSO", "predicted drug"]
    for ax, name in zip(fig.axes, ("DMSO", "drug")):
        missing = int((~scored & (predicted == name)).sum())
        text = " ".join(t.get_text() for t in ax.texts)
        if missing:
            assert f"{missing} without a score" in text and f"{missing} empty crop is {name} too" in text, (
                text
            )
    figures.save_figure(fig, tmp_path / "by_class.png")
    assert_png(tmp_path / "by_class.png")
    figures.save_figure(
        figures.gradcamo_by_treatment_figure(scores, cells.Metadata_Treatment, 0.5),
        tmp_path / "box.png",
    )
    assert_png(tmp_path / "box.png")
    # With the attention shares: a second panel of stacked bars, the figure twice as wide.
    rng = np.random.default_rng(0)
    split = rng.dirichlet([1, 1, 1], len(cells))
    attention = pd.DataFrame(split, columns=["cell", "neighbours", "background"])
    attention["uniform"] = 0.07
    figures.save_figure(
        figures.gradcamo_by_treatment_figure(scores, cells.Metadata_Treatment, 0.5, attention),
        tmp_path / "box_attention.png",
    )
    wide, narrow = (matplotlib.image.imread(tmp_path / f) for f in ("box_attention.png", "box.png"))
    assert wide.shape[1] > 1.8 * narrow.shape[1]
    assert_png(tmp_path / "box_attention.png")
    # All scores missing: still a labelled figure, not a crash.
    figures.save_figure(figures.gradcamo_histogram_figure(np.full(4, np.nan)), tmp_path / "nan.png")
    assert_png(tmp_path / "nan.png")


def test_cam_gallery_reads_crops_and_cams(project, tmp_path):
    root, cells = project
    low, high = figures.select_extremes(cells.Metadata_GradCAMO.to_numpy(), 4)
    stores = {
        (p, w): root / "results" / "crops" / p / w
        for p, w in cells[["Metadata_Plate", "Metadata_Well"]].drop_duplicates().itertuples(index=False)
    }
    cams = {key: root / "results" / "profiles" / key[0] / f"{key[1]}.attributions.npy" for key in stores}
    lowest = figures.read_gallery_cells(cells.iloc[low], stores, cams)
    highest = figures.read_gallery_cells(cells.iloc[high], stores, None)
    assert lowest[0].image.shape == (len(CHANNELS), *CROP) and lowest[0].cam.shape == CROP
    assert highest[0].cam is None and "Grad-CAMO" in highest[0].label
    row = cells.iloc[low[0]]
    expected = np.load(cams[(row.Metadata_Plate, row.Metadata_Well)])[row.Metadata_ProfileRow]
    np.testing.assert_array_equal(lowest[0].cam, expected.astype(np.float32))
    path = tmp_path / "gallery.png"
    figures.save_figure(figures.cam_gallery_figure(lowest, highest, CHANNELS), path)
    assert_png(path, (800, 600))

    figures.save_figure(figures.cam_gallery_figure([], [], CHANNELS), tmp_path / "none.png")
    assert_png(tmp_path / "none.png")

    with pytest.raises(InputError, match="no crop store given for well"):
        figures.read_gallery_cells(cells.iloc[low], {}, None)
    beyond = cells.iloc[low[:1]].copy()
    beyond["Metadata_ProfileRow"] = 999
    with pytest.raises(InputError, match="does not hold cell 999"):
        figures.read_gallery_cells(beyond, stores, cams)
    # The crops come from the store by site and object number: a store keeps a sample of
    # its well (crops.sample), and a cell outside it is named.
    absent = cells.iloc[low[:1]].copy()
    absent["Metadata_ObjectNumber"] = 9999
    assert not figures.stored_cells(absent, stores).any()
    assert figures.stored_cells(cells, stores).all()
    with pytest.raises(InputError, match="object 9999 is not in the store"):
        figures.read_gallery_cells(absent, stores, None)


def test_max_projection_rgb_is_a_colour_image():
    image = np.zeros((3, 4, 8, 8), np.float32)
    image[0, 2, 2:4, 2:4] = 5.0  # channel 0 (blue) bright in one plane only
    rgb = figures.max_projection_rgb(image)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[3, 3, 2] > rgb[3, 3, 0] and rgb[0, 0].sum() == 0


def test_training_curves(tmp_path):
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.2, 0.8, 0.5],
            "val_loss": [1.3, 1.0, 0.9],
            "train_accuracy": [0.4, 0.6, 0.8],
            "val_accuracy": [0.35, 0.5, 0.55],
            "val_cell_accuracy": [0.3, 0.45, 0.5],
            "val_context_accuracy": [0.25, 0.3, 0.4],
            "learning_rate": [1e-3] * 3,
            "seconds": [3.0, 3.1, 2.9],
        }
    )
    figure = figures.training_curves_figure(history)
    labels = [line.get_label() for line in figure.axes[1].get_lines()]
    assert labels == ["train", "validation", "validation, cell alone", "validation, context alone"]
    figures.save_figure(figure, tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")
    # A history without the audit (NaN columns) draws the two accuracy curves only.
    unaudited = history.assign(val_cell_accuracy=np.nan, val_context_accuracy=np.nan)
    assert len(figures.training_curves_figure(unaudited).axes[1].get_lines()) == 2
    # Missing columns and an empty history give labelled panels, not errors.
    partial = history[["train_loss"]]
    figures.save_figure(figures.training_curves_figure(partial), tmp_path / "partial.png")
    assert_png(tmp_path / "partial.png")
    figures.save_figure(figures.training_curves_figure(history.iloc[:0]), tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png")


def test_activity_figure(project, tmp_path):
    _, cells = project
    wells = sphere_profiles(well_profiles(cells), CONTROL, what="wells")
    table = activity_table(wells, sphere_profiles(cells, CONTROL), CONTROL, null_size=200)
    figures.save_figure(figures.activity_figure(table), tmp_path / "map.png")
    assert_png(tmp_path / "map.png")


def test_figures_name_the_map_and_its_smoothing():
    assert (
        figures.method_label("integrated_gradients", 1.0) == "integrated gradients (smoothed, sigma 1 voxel)"
    )
    assert figures.method_label("input_x_gradient", 2.0) == "input × gradient (smoothed, sigma 2 voxels)"
    assert figures.method_label("integrated_gradients", 0.0) == "integrated gradients"
    # The layer methods' maps are not smoothed (profile.smoothing_sigma is for input-level maps).
    assert figures.method_label("gradcam", 1.0) == "Grad-CAM"
    fig = figures.gradcamo_histogram_figure(
        np.linspace(0, 1, 20), 0.5, figures.method_label("integrated_gradients", 1.0)
    )
    assert "smoothed" in fig.get_suptitle()
