"""Profiling a crop store into a profile table: values, schema, empty wells, bad input."""

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from gradcamo.audit import audit_seeds, background_statistics, counterfactual_crops
from gradcamo.errors import InputError
from gradcamo.gradcam import GradCamProfiler, gradcamo_score, region_share, upsample_cam
from gradcamo.model import build_model, load_checkpoint, save_checkpoint
from gradcamo.profiles import (
    ATTENTION_COLUMNS,
    SHUFFLED_COLUMN,
    UNIFORM_COLUMN,
    check_store_matches,
    empty_profile_table,
    feature_columns,
    gate_by_evidence,
    profile_store,
    profile_table_of,
    target_class_index,
    well_split,
    write_profile_table,
)
from gradcamo.store import CropStore, CropStoreWriter

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
CROP = (8, 16, 16)
CLASSES = ["DMSO", "drug_low", "drug_high"]
NORMALIZATION = {"scope": "site", "lower_percentile": 1.0, "upper_percentile": 99.8}


def write_store(path, n_cells, channels=CHANNELS, crop=CROP, seed=0):
    rng = np.random.default_rng(seed)
    writer = CropStoreWriter(path, n_cells, channels, crop, NORMALIZATION)
    masks = np.zeros((n_cells, *crop), np.uint8)
    masks[:, 2:6, 4:12, 4:12] = 1
    masks[:, :, :3, :] = 2
    writer.write(rng.normal(size=(n_cells, len(channels), *crop)).astype(np.float32), masks)
    cells = pd.DataFrame(
        {
            "Metadata_Plate": pd.Series(["P1"] * n_cells, dtype=object),
            "Metadata_Well": pd.Series(["B02"] * n_cells, dtype=object),
            "Metadata_Site": np.ones(n_cells, np.int64),
            "Metadata_ObjectNumber": np.arange(1, n_cells + 1, dtype=np.int64),
        }
    )
    writer.close(cells)
    return CropStore.open(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("b0", len(CHANNELS), len(CLASSES), CROP)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    meta = dict(
        variant="b0", channels=CHANNELS, classes=CLASSES, crop_shape=list(CROP), normalization=NORMALIZATION
    )
    save_checkpoint(path, model, meta)
    return path


FILL = np.random.default_rng(7).normal(0, 0.1, (500, len(CHANNELS))).astype(np.float32)


def run_well(store, checkpoint, target="predicted", batch_size=4, cams=None, fill=FILL, mapped=None):
    model, meta = load_checkpoint(checkpoint)
    check_store_matches(meta, store, checkpoint)
    profiler = GradCamProfiler(model, "_blocks.1")  # 4×8×8 maps at this crop size
    result = profile_store(
        profiler, store, target, batch_size, "cpu", cams, fill=fill, cell_margin=1, seed=0, mapped=mapped
    )
    table = profile_table_of(result, store.cells, "test", meta["classes"], store.channels)
    return model, result, table


def test_profile_table_values(tmp_path, checkpoint, caplog):
    store = write_store(tmp_path / "store", 10)
    cams = np.zeros((10, *CROP), np.float16)
    with caplog.at_level(logging.INFO, logger="gradcamo"):
        model, result, table = run_well(store, checkpoint, cams=cams)
    assert sum("batch" in r.message for r in caplog.records) == 3  # 4 + 4 + 2 cells

    assert len(table) == 10
    meta_cols = [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Site",
        "Metadata_ObjectNumber",
        "Metadata_Split",
        "Metadata_Predicted",
        "Metadata_Probability",
        "Metadata_GradCAMO",
        "Metadata_AttributionEvidence",
        "Metadata_GradCAMO_Undefined",
        "Metadata_AttributionSampled",
        "Metadata_Attribution_NeighbourShare",
        "Metadata_Attribution_BackgroundShare",
        "Metadata_GradCAMO_Uniform",
        "Metadata_GradCAMO_Shuffled",
        "Metadata_CellReliance",
        "Metadata_ContextReliance",
        "Metadata_PredictedFromCell",
        "Metadata_PredictedFromContext",
        *(f"Metadata_BackgroundMean_{c}" for c in CHANNELS),
    ]
    assert list(table.columns) == meta_cols + feature_columns(1280)
    assert feature_columns(1280)[:2] == ["emb_0000", "emb_0001"]
    assert (table.dtypes[feature_columns(1280)] == np.float32).all()
    pd.testing.assert_frame_equal(table[store.cells.columns], store.cells)
    assert (table["Metadata_Split"] == "test").all()

    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(store.images, np.float32)))
    probs = torch.softmax(logits, 1)
    assert list(table["Metadata_Predicted"]) == [CLASSES[k] for k in probs.argmax(1)]
    np.testing.assert_allclose(table["Metadata_Probability"], probs.max(1).values, rtol=1e-5)

    # Saved maps are scaled to a maximum of 1; their Grad-CAMO is the table's (float16: loose).
    peaks = cams.reshape(10, -1).max(1)
    assert ((peaks == 1) | (peaks == 0)).all() and (peaks == 1).any()
    scores = gradcamo_score(cams.astype(np.float32), np.asarray(store.masks))
    np.testing.assert_allclose(table["Metadata_GradCAMO"], scores, rtol=1e-3, equal_nan=True)
    assert np.isfinite(result["scores"]).any()
    assert ((result["scores"][np.isfinite(result["scores"])] >= 0) & (result["scores"] <= 1)).all()
    # Cell, neighbours and background: each map's attention, all of it, and the table's.
    shares = table[["Metadata_GradCAMO", *ATTENTION_COLUMNS.values()]].to_numpy(np.float64)
    scored = np.isfinite(shares[:, 0])
    np.testing.assert_allclose(shares[scored].sum(1), 1.0, rtol=1e-5)
    assert (shares[scored] >= 0).all()
    neighbours = region_share(cams.astype(np.float32), np.asarray(store.masks), 2)
    np.testing.assert_allclose(
        table["Metadata_Attribution_NeighbourShare"], neighbours, rtol=1e-3, atol=1e-6, equal_nan=True
    )
    # The uniform-map baseline is the cell's share of the crop's voxels.
    masks = np.asarray(store.masks)
    np.testing.assert_allclose(table[UNIFORM_COLUMN], (masks == 1).reshape(10, -1).mean(1), rtol=1e-6)


def test_audit_predicts_again_without_the_cell_and_without_its_context(tmp_path, checkpoint):
    store = write_store(tmp_path / "store", 6)
    model, result, table = run_well(store, checkpoint)
    images, masks = np.asarray(store.images, np.float32), np.asarray(store.masks)
    without_cell, without_context = counterfactual_crops(images, masks, FILL, 1, audit_seeds(store.cells, 0))
    with torch.no_grad():
        full = torch.softmax(model(torch.from_numpy(images)), 1).numpy()
        no_cell = torch.softmax(model(torch.from_numpy(without_cell)), 1).numpy()
        no_context = torch.softmax(model(torch.from_numpy(without_context)), 1).numpy()
    target = full.argmax(1)
    rows = np.arange(6)
    np.testing.assert_allclose(
        table["Metadata_CellReliance"], full[rows, target] - no_cell[rows, target], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        table["Metadata_ContextReliance"], full[rows, target] - no_context[rows, target], rtol=1e-4, atol=1e-5
    )
    assert list(table["Metadata_PredictedFromCell"]) == [CLASSES[k] for k in no_context.argmax(1)]
    assert list(table["Metadata_PredictedFromContext"]) == [CLASSES[k] for k in no_cell.argmax(1)]
    np.testing.assert_allclose(result["background"], background_statistics(images, masks, 1))
    # Without a fill: no audit, NaN reliances, no predictions.
    _, _, plain = run_well(store, checkpoint, fill=None)
    assert plain["Metadata_CellReliance"].isna().all() and plain["Metadata_PredictedFromCell"].isna().all()
    pd.testing.assert_series_equal(plain["Metadata_GradCAMO"], table["Metadata_GradCAMO"])


def test_results_do_not_depend_on_batch_size(tmp_path, checkpoint):
    store = write_store(tmp_path / "store", 7)
    _, by_three, _ = run_well(store, checkpoint, batch_size=3)
    _, all_at_once, _ = run_well(store, checkpoint, batch_size=64)
    for name in ("cell", "context"):
        np.testing.assert_allclose(by_three["audit"][name], all_at_once["audit"][name], rtol=1e-4, atol=1e-5)
    for key in ("embedding", "probabilities", "scores"):
        np.testing.assert_allclose(by_three[key], all_at_once[key], rtol=1e-4, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(by_three["uniform"], all_at_once["uniform"])
    np.testing.assert_allclose(by_three["shuffled"], all_at_once["shuffled"], rtol=1e-4, equal_nan=True)
    for region in ATTENTION_COLUMNS:
        np.testing.assert_allclose(
            by_three["attention"][region],
            all_at_once["attention"][region],
            rtol=1e-4,
            atol=1e-6,
            equal_nan=True,
        )


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_shuffled_baseline_scores_each_mask_on_the_next_cells_map(tmp_path, checkpoint, batch_size):
    """Cell i's mask on cell i+1's map, the last cell's on the first's, across batches (a
    batch of one cell included); a well of one cell has no other map: NaN."""
    store = write_store(tmp_path / "store", 7)
    masks = np.array(store.masks)
    for i in range(7):  # each cell its own mask: the pairing must take the mask of this cell
        masks[i] = 0
        masks[i, 1 : 3 + i % 4, 2 + i : 9 + i, 3:12] = 1
    writer = CropStoreWriter(tmp_path / "own", 7, CHANNELS, CROP, NORMALIZATION)
    writer.write(np.asarray(store.images, np.float32), masks)
    writer.close(store.cells)
    store = CropStore.open(tmp_path / "own")
    cams = np.zeros((7, *CROP), np.float32)
    _, result, table = run_well(store, checkpoint, batch_size=batch_size, cams=cams)
    expected = gradcamo_score(np.roll(cams, -1, axis=0), masks)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(result["shuffled"], expected, rtol=1e-5)
    np.testing.assert_allclose(table[SHUFFLED_COLUMN], expected, rtol=1e-5)
    assert not np.allclose(expected, result["scores"])  # not the cell's own map
    _, one, _ = run_well(write_store(tmp_path / "one", 1), checkpoint, batch_size=batch_size)
    assert np.isnan(one["shuffled"]).all() and np.isfinite(one["scores"]).all()


def test_true_class_target_explains_that_class(tmp_path, checkpoint):
    store = write_store(tmp_path / "store", 5)
    target = target_class_index("true", "drug_high", CLASSES)
    assert target == 2
    model, result, _ = run_well(store, checkpoint, target=target)
    x = torch.from_numpy(np.asarray(store.images, np.float32))
    out = GradCamProfiler(model, "_blocks.1")(x, torch.full((5,), 2))
    expected = gradcamo_score(upsample_cam(out["cam"], CROP), torch.from_numpy(np.array(store.masks)))
    np.testing.assert_allclose(result["scores"], expected.numpy(), rtol=1e-5, equal_nan=True)


def test_empty_well_has_the_full_schema(tmp_path, checkpoint):
    full = run_well(write_store(tmp_path / "full", 3), checkpoint)[2]
    empty_store = write_store(tmp_path / "empty", 0)
    empty = run_well(empty_store, checkpoint)[2]
    assert len(empty) == 0
    assert list(empty.columns) == list(full.columns)
    pd.testing.assert_series_equal(empty.dtypes, full.dtypes)
    direct = empty_profile_table(empty_store.cells, "test", 1280, CLASSES, CHANNELS)
    pd.testing.assert_frame_equal(direct, empty)

    write_profile_table(full, tmp_path / "full.parquet")
    write_profile_table(empty, tmp_path / "empty.parquet")
    assert pq.read_schema(tmp_path / "empty.parquet").equals(pq.read_schema(tmp_path / "full.parquet"))
    back = pd.read_parquet(tmp_path / "empty.parquet")
    pd.testing.assert_series_equal(back.dtypes, full.dtypes)


@pytest.mark.parametrize(
    "channels, crop", [(CHANNELS[:4], CROP), (CHANNELS, (8, 16, 20))], ids=["channels", "crop_shape"]
)
def test_mismatched_checkpoint_names_both(tmp_path, checkpoint, channels, crop):
    store = write_store(tmp_path / "store", 2, channels=channels, crop=crop)
    _, meta = load_checkpoint(checkpoint)
    with pytest.raises(InputError) as err:
        check_store_matches(meta, store, checkpoint)
    message = str(err.value)
    for part in (str(checkpoint), str(store.path), str(CHANNELS), str(channels), str(CROP), str(crop)):
        assert part in message


def test_target_class_index_rejects_bad_values():
    assert target_class_index("predicted", "whatever", CLASSES) == "predicted"
    with pytest.raises(InputError, match="'unknown'.*DMSO"):
        target_class_index("true", "unknown", CLASSES)
    with pytest.raises(InputError, match="target_class"):
        target_class_index("truth", "DMSO", CLASSES)


def test_well_split_lookup(tmp_path):
    splits = pd.DataFrame(
        {
            "plate": ["P1", "P1"],
            "well": ["B02", "C03"],
            "treatment": ["DMSO", "drug_low"],
            "split": ["train", "test"],
        }
    )
    row = well_split(splits, "P1", "C03", source="wells.tsv")
    assert (row["treatment"], row["split"]) == ("drug_low", "test")
    with pytest.raises(InputError, match=r"wells\.tsv.*'P2'.*'B02'"):
        well_split(splits, "P2", "B02", source="wells.tsv")
    with pytest.raises(InputError, match="split"):
        well_split(splits.drop(columns="split"), "P1", "B02", source="wells.tsv")


def test_evidence_is_the_class_probability_over_the_empty_crop_and_gates_the_score(tmp_path, checkpoint):
    """The evidence column is p(crop) - p(baseline crop) of the explained class; below
    profile.min_evidence Grad-CAMO is NaN and the reason says whether the empty crop is
    itself predicted as that class."""
    store = write_store(tmp_path / "store", 8)
    model, meta = load_checkpoint(checkpoint)
    baseline = FILL.mean(0)
    profiler = GradCamProfiler(model, "_blocks.1", baseline=baseline)
    result = profile_store(profiler, store, "predicted", 4, "cpu", fill=FILL, cell_margin=1, seed=0)
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(np.asarray(store.images, np.float32))), 1).numpy()
        empty = torch.from_numpy(
            np.broadcast_to(baseline[None, :, None, None, None], (1, len(CHANNELS), *CROP)).copy()
        )
        p_empty = torch.softmax(model(empty), 1).numpy()[0]
    explained = p.argmax(1)
    np.testing.assert_allclose(result["evidence"], p.max(1) - p_empty[explained], atol=1e-5)
    assert (result["baseline_class"] == p_empty.argmax()).all()

    middle = float(np.median(result["evidence"]))
    table = profile_table_of(result, store.cells, "test", meta["classes"], store.channels, middle)
    kept = result["evidence"] >= middle
    np.testing.assert_allclose(table["Metadata_GradCAMO"][kept], result["scores"][kept], rtol=1e-6)
    assert table["Metadata_GradCAMO"][~kept].isna().all()
    reasons = table["Metadata_GradCAMO_Undefined"]
    assert reasons[kept].isna().all()
    expected = np.where(explained == p_empty.argmax(), "baseline_is_class", "low_evidence")
    assert list(reasons[~kept]) == list(expected[~kept])
    np.testing.assert_allclose(table["Metadata_AttributionEvidence"], result["evidence"], rtol=1e-6)
    # Without a gate every finite score stands, and the all-zero maps say so.
    scores, why = gate_by_evidence(np.array([0.2, np.nan, 0.7]), np.array([0.0, 0.5, -0.2]), None, None, -1)
    assert why == [None, "no_attention", None] and np.isfinite(scores[[0, 2]]).all()
    scores, why = gate_by_evidence(
        np.array([0.2, 0.4, 0.7]), np.array([0.01, 0.5, 0.02]), np.array([0, 1, 1]), np.array([0, 0, 0]), 0.05
    )
    assert why == ["baseline_is_class", None, "low_evidence"]
    assert np.isnan(scores[[0, 2]]).all() and scores[1] == 0.4


@pytest.mark.parametrize("batch_size", [2, 64])
def test_a_sampled_well_profiles_every_cell_and_maps_only_the_sample(tmp_path, checkpoint, batch_size):
    """profile.attribution_cells_per_well: every cell gets its embedding and prediction (as in
    a run that maps every cell), only the sampled cells a map, Grad-CAMO, the shares, the
    audit; the shuffled baseline pairs sampled cells only; the rest say not_sampled."""
    store = write_store(tmp_path / "store", 9)
    mapped = np.zeros(9, bool)
    mapped[[1, 2, 5, 8]] = True
    cams = np.ones((9, *CROP), np.float32)
    _, every, _ = run_well(store, checkpoint, batch_size=batch_size)
    _, some, table = run_well(store, checkpoint, batch_size=batch_size, cams=cams, mapped=mapped)
    for key in ("embedding", "probabilities"):
        np.testing.assert_allclose(some[key], every[key], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(some["background"], every["background"])
    np.testing.assert_allclose(some["scores"][mapped], every["scores"][mapped], rtol=1e-4)
    for name in ("cell", "context"):
        np.testing.assert_allclose(
            some["audit"][name][mapped], every["audit"][name][mapped], rtol=1e-4, atol=1e-6
        )
        assert np.isnan(some["audit"][name][~mapped]).all()
    assert np.isnan(some["scores"][~mapped]).all() and np.isnan(some["uniform"][~mapped]).all()
    assert (cams[~mapped] == 0).all() and (cams[mapped].reshape(4, -1).max(1) == 1).all()
    sampled_masks = np.asarray(store.masks)[mapped]
    maps = cams[mapped]
    expected = gradcamo_score(np.roll(maps, -1, axis=0), sampled_masks)
    np.testing.assert_allclose(some["shuffled"][mapped], expected, rtol=1e-4)
    assert np.isnan(some["shuffled"][~mapped]).all()
    assert table["Metadata_AttributionSampled"].tolist() == mapped.tolist()
    assert (table.loc[~mapped, "Metadata_GradCAMO_Undefined"] == "not_sampled").all()
    assert table.loc[~mapped, "Metadata_PredictedFromCell"].isna().all()
    assert table.loc[mapped, "Metadata_PredictedFromCell"].notna().all()
    assert (
        table["Metadata_Predicted"].tolist() == run_well(store, checkpoint)[2]["Metadata_Predicted"].tolist()
    )
    _, none, table = run_well(store, checkpoint, batch_size=batch_size, mapped=np.zeros(9, bool))
    assert np.isnan(none["scores"]).all() and (table["Metadata_GradCAMO_Undefined"] == "not_sampled").all()
    np.testing.assert_allclose(none["embedding"], every["embedding"], rtol=1e-4, atol=1e-6)
