"""Single-cell crops: geometry at the borders, masks, normalisation, the store, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import file_site
from gradcamo import crops, normalization
from gradcamo.errors import InputError
from gradcamo.io import write_labels, write_zstack
from gradcamo.sites import SiteSource
from gradcamo.store import CropStore

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
IMAGE_SHAPE = (8, 24, 28)  # Z, Y, X
CROP = (5, 7, 9)
METADATA = {"plate": "P1", "well": "B02", "treatment": "DMSO", "concentration": 0.0, "control": True}
SITE_SCOPE = {"scope": "site", "reference": "controls", "lower_percentile": 1.0, "upper_percentile": 99.8}
PLATE_SCOPE = {**SITE_SCOPE, "scope": "plate"}


def coordinate_stack(shape=IMAGE_SHAPE, n_channels=2) -> np.ndarray:
    """A (Z, C, Y, X) stack whose voxel values encode their position (channel c adds c)."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    code = 1 + z * shape[1] * shape[2] + y * shape[2] + x
    return np.stack([code + 10000 * c for c in range(n_channels)], axis=1).astype(np.float64)


def cube_labels(centres, half=1, shape=IMAGE_SHAPE) -> np.ndarray:
    """Labels with one (2*half+1)^3 cube per centre (clipped at the image), label = index + 1."""
    labels = np.zeros(shape, np.int32)
    for i, centre in enumerate(centres, start=1):
        box = tuple(slice(max(c - half, 0), min(c + half + 1, s)) for c, s in zip(centre, shape))
        labels[box] = i
    return labels


# One cell at the middle of the image, moved to each of the six faces.
MIDDLE = (4, 12, 14)
BORDERS = {
    "z_low": (0, 12, 14),
    "z_high": (7, 12, 14),
    "y_low": (4, 0, 14),
    "y_high": (4, 23, 14),
    "x_low": (4, 12, 0),
    "x_high": (4, 12, 27),
}


@pytest.mark.parametrize("border", sorted(BORDERS))
def test_crop_at_each_border_is_zero_padded_and_positioned(border):
    stack = coordinate_stack()
    labels = cube_labels([BORDERS[border]])
    table = crops.cell_table(labels, CROP)
    assert len(table) == 1
    identity = np.array([[0.0, 1.0]] * stack.shape[1])  # normalisation leaves values as they are
    images, masks = crops.crop_cells(stack, labels, table, CROP, identity)

    centroid = table[["Metadata_Centroid_Z", "Metadata_Centroid_Y", "Metadata_Centroid_X"]].to_numpy()[0]
    origin = crops.crop_origin(centroid, CROP)
    # Every voxel of the crop is the image voxel at origin + index, or 0 outside the image.
    idx = np.meshgrid(*[np.arange(s) for s in CROP], indexing="ij")
    coords = [origin[a] + idx[a] for a in range(3)]
    inside = np.all([(c >= 0) & (c < s) for c, s in zip(coords, IMAGE_SHAPE)], axis=0)
    expected = np.where(inside, 1 + coords[0] * 24 * 28 + coords[1] * 28 + coords[2], 0)
    np.testing.assert_array_equal(images[0, 0], expected.astype(np.float32))
    np.testing.assert_array_equal(images[0, 1], np.where(inside, expected + 10000, 0).astype(np.float32))
    # The cell's centroid voxel sits at the crop centre, and the cell is in the mask there.
    assert masks[0][tuple(s // 2 for s in CROP)] == 1
    assert table["Metadata_PaddingShare"].iloc[0] == pytest.approx(1 - inside.mean())
    assert table["Metadata_PaddingShare"].iloc[0] > 0
    # Border contact means the Y/X border only (cells always sit on the first planes in Z).
    assert table["Metadata_BorderContact"].iloc[0] == border.startswith(("y", "x"))


def test_crop_in_the_middle_has_no_padding():
    labels = cube_labels([MIDDLE])
    table = crops.cell_table(labels, CROP)
    assert table["Metadata_PaddingShare"].iloc[0] == 0.0
    assert not table["Metadata_BorderContact"].iloc[0]
    row = table.iloc[0]
    assert (row.Metadata_Centroid_Z, row.Metadata_Centroid_Y, row.Metadata_Centroid_X) == MIDDLE
    assert row.Metadata_Volume == 27
    assert (row.Metadata_BBox_ZMin, row.Metadata_BBox_ZMax) == (3, 6)  # max is exclusive


def test_crop_origin_puts_the_centroid_at_the_centre_voxel():
    np.testing.assert_array_equal(crops.crop_origin((10.0, 10.4, 10.6), (5, 4, 21)), [8, 8, 1])
    np.testing.assert_array_equal(crops.crop_origin((2.5, 0.0, -0.4), (1, 1, 1)), [3, 0, 0])


def test_box_entirely_outside_is_all_padding():
    volume = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    box = crops.extract_box(volume, (10, 0, 0), (2, 2, 2))
    assert box.shape == (2, 2, 2, 2) and not box.any()
    assert crops.padding_share((10, 0, 0), (2, 2, 2), (3, 4, 5)) == 1.0


def test_masks_mark_cell_of_interest_other_cells_and_background():
    labels = np.zeros(IMAGE_SHAPE, np.int32)
    labels[2:6, 8:12, 8:14] = 7  # cell of interest
    labels[2:6, 12:16, 8:14] = 3  # touching neighbour
    table = crops.cell_table(labels, CROP)
    images, masks = crops.crop_cells(coordinate_stack(), labels, table, CROP, np.array([[0.0, 1.0]] * 2))
    by_object = dict(zip(table["Metadata_ObjectNumber"], masks))
    for obj, other in ((7, 3), (3, 7)):
        mask = by_object[obj]
        origin = crops.crop_origin(
            table.loc[
                table.Metadata_ObjectNumber == obj,
                ["Metadata_Centroid_Z", "Metadata_Centroid_Y", "Metadata_Centroid_X"],
            ].to_numpy()[0],
            CROP,
        )
        label_box = crops.extract_box(labels, origin, CROP)
        np.testing.assert_array_equal(mask == 1, label_box == obj)
        np.testing.assert_array_equal(mask == 2, label_box == other)
        np.testing.assert_array_equal(mask == 0, label_box == 0)
        assert set(np.unique(mask)) == {0, 1, 2}
    assert masks.dtype == np.uint8


def test_percentile_bounds_and_normalisation():
    rng = np.random.default_rng(0)
    stack = rng.integers(100, 5000, (4, 3, 10, 12)).astype(np.uint16)
    stack[:, 2] = 7  # a constant channel
    bounds = normalization.percentile_bounds(stack, 1.0, 99.8)
    for c in range(2):
        np.testing.assert_allclose(bounds[c], np.percentile(stack[:, c], [1.0, 99.8]))
    np.testing.assert_allclose(bounds[2], [7.0, 8.0])  # no zero range
    normalized = normalization.normalize(np.moveaxis(stack, 1, 0), bounds)
    for c in range(2):
        assert np.mean(normalized[c] < 0) == pytest.approx(0.01, abs=0.005)
        assert np.mean(normalized[c] > 1) == pytest.approx(0.002, abs=0.002)
    assert normalized.dtype == np.float32 and not normalized[2].any()


def test_mostly_empty_channel_falls_back_to_its_maximum():
    stack = np.zeros((2, 1, 40, 40), np.uint16)  # one bright voxel in 3200
    stack[0, 0, 0, 0] = 500
    np.testing.assert_allclose(normalization.percentile_bounds(stack, 1.0, 99.8), [[0.0, 500.0]])


def test_plate_reference_pools_sampled_sites_and_fills_from_background(tmp_path):
    rng = np.random.default_rng(1)
    sites = []
    for i, scale in enumerate((1000, 3000)):
        path, labels_path = tmp_path / f"s{i}.tif", tmp_path / f"s{i}_labels.tif"
        write_zstack(path, rng.integers(0, scale, (4, 5, 32, 32)).astype(np.uint16), CHANNELS)
        labels = np.zeros((4, 32, 32), np.uint16)
        labels[:, :16] = 1  # the top half is a cell: the fill comes from the bottom half
        write_labels(labels_path, labels)
        sites.append(file_site(i, path, labels_path))

    def reference(scope, sample, fill=500):
        return normalization.plate_reference(sites, 2.0, 98.0, scope, sample, fill, seed=0)

    exact, fill = reference("plate", 10**9)  # no subsampling
    sampled, _ = reference("plate", 2000)  # every 4th voxel
    pooled = np.concatenate([site.zstack() for site in sites], axis=0)
    np.testing.assert_allclose(exact, normalization.percentile_bounds(pooled, 2.0, 98.0))
    np.testing.assert_allclose(sampled, exact, atol=0.03 * 3000)
    assert not np.array_equal(sampled, exact)
    # The fill: background voxels only (clear of the cell by 2 voxels), normalised alike.
    assert fill.shape == (500, 5) and fill.dtype == np.float32
    background = np.concatenate(
        [site.zstack()[:, :, 18:].transpose(0, 2, 3, 1).reshape(-1, 5) for site in sites]
    )
    expected = normalization.normalize_voxels(background, exact)
    assert fill.min() >= expected.min() - 1e-6 and fill.max() <= expected.max() + 1e-6
    np.testing.assert_allclose(fill.mean(0), expected.mean(0), atol=0.05)
    # Scope site: no plate bounds; each site's fill scaled by its own percentiles.
    bounds, site_fill = reference("site", 2000)
    assert bounds is None and site_fill.shape == (500, 5)
    assert abs(site_fill.mean() - 0.5) < 0.1


def test_filters_count_what_they_drop():
    labels = np.zeros(IMAGE_SHAPE, np.int32)
    labels[2:4, 5:8, 5:8] = 1  # 18 voxels
    labels[2:6, 10:16, 10:16] = 2  # 144 voxels
    labels[2:4, 0:3, 20:23] = 3  # 18 voxels, at the border
    table = crops.cell_table(labels, CROP)
    kept, counts = crops.filter_cells(table, min_volume=20, max_volume=100, drop_border=True)
    assert list(kept["Metadata_ObjectNumber"]) == []
    assert counts == {"n_cells": 3, "too_small": 2, "too_large": 1, "border": 1, "kept": 0}
    kept, counts = crops.filter_cells(table, min_volume=0, max_volume=None, drop_border=True)
    assert list(kept["Metadata_ObjectNumber"]) == [1, 2] and counts["border"] == 1


# ------------------------------------------------------------------------------ store


def write_site(folder: Path, name: str, labels: np.ndarray, n_channels=5, seed=0) -> SiteSource:
    rng = np.random.default_rng(seed)
    stack = rng.integers(100, 4000, (labels.shape[0], n_channels, *labels.shape[1:])).astype(np.uint16)
    write_zstack(folder / f"{name}.tif", stack, CHANNELS[:n_channels])
    write_labels(folder / f"{name}_labels.tif", labels)
    # Read as the workflow would, with all five configured channels.
    return file_site(int(name[-1]), folder / f"{name}.tif", folder / f"{name}_labels.tif", CHANNELS)


def test_well_store_random_access_matches_direct_crops(tmp_path):
    sites = [
        write_site(tmp_path, "site1", cube_labels([(3, 5, 5), (4, 12, 14), (6, 20, 25)]), seed=1),
        write_site(tmp_path, "site2", cube_labels([(2, 10, 10), (5, 3, 22)], half=2), seed=2),
    ]
    store_dir = tmp_path / "store"
    summary = crops.write_well_store(
        store_dir, sites, METADATA, CHANNELS, CROP, normalization=SITE_SCOPE, filters={"min_volume": 0}
    )
    store = CropStore.open(store_dir)
    assert summary["n_cells"] == len(store) == 5
    assert store.images.shape == (5, 5, *CROP) and store.images.dtype == np.float16
    assert store.masks.shape == (5, *CROP)
    assert store.crop_shape == CROP and store.channels == CHANNELS
    assert list(store.cells.columns) == crops.CELL_COLUMNS
    assert list(store.cells["Metadata_Site"]) == [1, 1, 1, 2, 2]
    assert list(store.cells["Metadata_ObjectNumber"]) == [1, 2, 3, 1, 2]
    assert set(store.cells["Metadata_Treatment"]) == {"DMSO"} and store.cells["Metadata_Control"].all()
    assert store.normalization["scope"] == "site" and set(store.normalization["bounds"]) == {"1", "2"}

    for index in (4, 0, 2):  # any order
        row = store.cells.iloc[index]
        site = sites[int(row.Metadata_Site) - 1]
        stack, labels = site.arrays()
        bounds = np.asarray(store.normalization["bounds"][str(row.Metadata_Site)])
        images, masks = crops.crop_cells(stack, labels, store.cells.iloc[[index]], CROP, bounds)
        image, mask = store[index]
        np.testing.assert_allclose(image, images[0], rtol=1e-3, atol=1e-3)  # float16 storage
        np.testing.assert_array_equal(mask, masks[0])


def test_plate_scope_uses_the_given_bounds(tmp_path):
    site = write_site(tmp_path, "site1", cube_labels([(4, 12, 14)]))
    bounds = np.array([[0.0, 4000.0]] * 5)
    crops.write_well_store(
        tmp_path / "store", [site], METADATA, CHANNELS, CROP, normalization=PLATE_SCOPE, bounds=bounds
    )
    store = CropStore.open(tmp_path / "store")
    assert store.normalization["bounds"] == bounds.tolist()
    image, mask = store[0]
    np.testing.assert_allclose(
        image[:, mask > 0],
        site.zstack().transpose(1, 0, 2, 3)[:, 3:6, 11:14, 13:16].reshape(5, -1) / 4000,
        rtol=1e-3,
    )


def test_filters_apply_to_the_store_but_masks_keep_dropped_neighbours(tmp_path):
    labels = cube_labels([(4, 12, 14), (4, 12, 17)])  # touching cubes
    labels[labels == 2] = 0
    labels[3:6, 11:14, 16:18] = 2  # a smaller neighbour (18 voxels)
    site = write_site(tmp_path, "site1", labels)
    summary = crops.write_well_store(
        tmp_path / "store",
        [site],
        METADATA,
        CHANNELS,
        CROP,
        normalization=SITE_SCOPE,
        filters={"min_volume": 20},
    )
    store = CropStore.open(tmp_path / "store")
    assert summary["too_small"] == 1 and len(store) == 1
    assert (store.masks[0] == 2).sum() == 18  # the dropped cell is still "another cell"


def test_empty_sites_give_a_valid_empty_store(tmp_path):
    empty = np.zeros(IMAGE_SHAPE, np.int32)
    sites = [write_site(tmp_path, "site1", empty), write_site(tmp_path, "site2", empty)]
    summary = crops.write_well_store(
        tmp_path / "store", sites, METADATA, CHANNELS, CROP, normalization=SITE_SCOPE
    )
    store = CropStore.open(tmp_path / "store")
    assert summary["n_cells"] == len(store) == 0
    assert store.images.shape == (0, 5, *CROP) and store.masks.shape == (0, *CROP)
    assert list(store.cells.columns) == crops.CELL_COLUMNS
    assert store.cells["Metadata_Volume"].dtype == np.int64


def test_an_empty_site_beside_a_full_one(tmp_path):
    sites = [
        write_site(tmp_path, "site1", np.zeros(IMAGE_SHAPE, np.int32)),
        write_site(tmp_path, "site2", cube_labels([(4, 12, 14)])),
    ]
    crops.write_well_store(tmp_path / "store", sites, METADATA, CHANNELS, CROP, normalization=SITE_SCOPE)
    store = CropStore.open(tmp_path / "store")
    assert list(store.cells["Metadata_Site"]) == [2]


def assert_no_output(folder: Path) -> None:
    assert not (folder / "store").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".store")]  # no temp left


def test_label_shape_mismatch_fails_naming_the_file(tmp_path):
    site = write_site(tmp_path, "site1", cube_labels([(4, 12, 14)]))
    write_labels(tmp_path / "site1_labels.tif", np.zeros((8, 24, 20), np.int32))
    with pytest.raises(InputError, match=r"site1_labels\.tif.*shape"):
        crops.write_well_store(tmp_path / "store", [site], METADATA, CHANNELS, CROP, normalization=SITE_SCOPE)
    assert_no_output(tmp_path)


def test_corrupt_tiff_fails_naming_the_file(tmp_path):
    good = write_site(tmp_path, "site1", cube_labels([(4, 12, 14)]))
    bad = write_site(tmp_path, "site2", cube_labels([(4, 12, 14)]))
    (tmp_path / "site2.tif").write_bytes(b"II*\x00 not a tiff at all")
    with pytest.raises(InputError, match=r"site2\.tif"):
        crops.write_well_store(
            tmp_path / "store", [good, bad], METADATA, CHANNELS, CROP, normalization=SITE_SCOPE
        )
    assert_no_output(tmp_path)
    (tmp_path / "site2_labels.tif").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"site2_labels\.tif"):
        crops.write_well_store(
            tmp_path / "store", [good, bad], METADATA, CHANNELS, CROP, normalization=SITE_SCOPE
        )
    assert_no_output(tmp_path)


def test_wrong_number_of_channels_fails_naming_the_file(tmp_path):
    site = write_site(tmp_path, "site1", cube_labels([(4, 12, 14)]), n_channels=4)
    with pytest.raises(
        InputError, match=r"site1\.tif: configured channel 'Mito' is not in the export's channels"
    ):
        crops.write_well_store(tmp_path / "store", [site], METADATA, CHANNELS, CROP, normalization=SITE_SCOPE)
    assert_no_output(tmp_path)


def test_a_failed_rewrite_keeps_the_previous_store(tmp_path):
    site = write_site(tmp_path, "site1", cube_labels([(4, 12, 14)]))
    crops.write_well_store(tmp_path / "store", [site], METADATA, CHANNELS, CROP, normalization=SITE_SCOPE)
    write_labels(tmp_path / "site1_labels.tif", np.zeros((2, 2, 2), np.int32))
    with pytest.raises(InputError):
        crops.write_well_store(tmp_path / "store", [site], METADATA, CHANNELS, CROP, normalization=SITE_SCOPE)
    assert len(CropStore.open(tmp_path / "store")) == 1


# ------------------------------------------------------------- sample, crops on the fly


def test_sample_order_is_seeded_per_well_and_smaller_samples_are_part_of_larger_ones():
    order = crops.sample_order(50, "P1", "B02", seed=0)
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(order, crops.sample_order(50, "P1", "B02", seed=0))
    assert not np.array_equal(order, crops.sample_order(50, "P1", "B03", seed=0))
    assert not np.array_equal(order, crops.sample_order(50, "P1", "B02", seed=1))
    small = crops.sample_mask(50, 5, "P1", "B02", 0)
    large = crops.sample_mask(50, 20, "P1", "B02", 0)
    assert small.sum() == 5 and large.sum() == 20 and (large[small]).all()
    # A well at or below the cap keeps every cell; None keeps every cell.
    assert crops.sample_mask(7, 7, "P1", "B02", 0).all() and crops.sample_mask(7, None, "P1", "B02", 0).all()


def sample_sites(tmp_path):
    centres = [(3, 5, 5), (4, 12, 14), (6, 20, 25), (2, 5, 20), (5, 18, 6)]
    return [
        write_site(tmp_path, "site1", cube_labels(centres), seed=1),
        write_site(tmp_path, "site2", cube_labels(centres[:2], half=2), seed=2),
        write_site(tmp_path, "site3", cube_labels(centres[2:]), seed=3),
    ]


def test_a_store_keeps_its_sample_and_records_the_well(tmp_path):
    sites = sample_sites(tmp_path)
    args = (sites, METADATA, CHANNELS, CROP)
    kw = dict(normalization=SITE_SCOPE, filters={"min_volume": 0}, sample_seed=3)
    every = crops.write_well_store(tmp_path / "all", *args, **kw)
    some = crops.write_well_store(tmp_path / "some", *args, cells_per_well=4, **kw)
    full, sample = CropStore.open(tmp_path / "all"), CropStore.open(tmp_path / "some")
    assert every["n_cells"] == every["well_cells"] == 10 and some == {**every, "n_cells": 4}
    kept = crops.sample_mask(10, 4, "P1", "B02", 3)
    keys = ["Metadata_Site", "Metadata_ObjectNumber"]
    assert sample.cells[keys].values.tolist() == full.cells[keys][kept].values.tolist()  # site, object order
    np.testing.assert_array_equal(np.asarray(sample.images), np.asarray(full.images)[kept])
    np.testing.assert_array_equal(np.asarray(sample.masks), np.asarray(full.masks)[kept])
    meta = json.loads((tmp_path / "some" / "store.json").read_text())
    assert meta["sample"] == {"cells_per_well": 4, "seed": 3, "well_cells": 10}


@pytest.mark.parametrize("context", ["full", "cell"])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 64])
def test_crops_made_on_the_fly_are_the_store_s_to_the_last_bit(tmp_path, context, batch_size):
    sites = sample_sites(tmp_path)
    fill = np.random.default_rng(0).normal(0, 1, (200, 5)).astype(np.float32)
    kw = dict(
        normalization=SITE_SCOPE,
        context_fill=fill if context == "cell" else None,
        cell_margin=1,
        seed=5,
    )
    crops.write_well_store(
        tmp_path / "store", sites, METADATA, CHANNELS, CROP, filters={"min_volume": 0}, context=context, **kw
    )
    store = CropStore.open(tmp_path / "store")
    cells, _ = crops.well_cell_table(sites, METADATA, CROP, {"min_volume": 0})
    batches = list(crops.prefetched(crops.crop_batches(sites, cells, CROP, batch_size, **kw)))
    assert [len(b[0]) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.float32 and len(images) == len(store) == 10
    np.testing.assert_array_equal(images, np.asarray(store.images, np.float32))
    np.testing.assert_array_equal(masks, np.asarray(store.masks))


def test_crop_batches_read_only_the_sites_with_cells_to_crop(tmp_path):
    sites = sample_sites(tmp_path)
    cells, _ = crops.well_cell_table(sites, METADATA, CROP, {"min_volume": 0})
    read = []
    counted = [
        SiteSource(s.site, s.name, (lambda s=s: read.append(s.site) or s.zstack()), s.labels) for s in sites
    ]
    only_site3 = cells[cells["Metadata_Site"] == 3]
    batches = list(crops.crop_batches(counted, only_site3, CROP, 2, normalization=SITE_SCOPE))
    assert read == [3] and sum(len(b[0]) for b in batches) == len(only_site3) == 3


def test_prefetched_raises_the_producer_s_error_where_it_happened():
    def items():
        yield 1
        yield 2
        raise InputError("site 3: broken TIFF")

    got = []
    with pytest.raises(InputError, match="site 3: broken TIFF"):
        for item in crops.prefetched(items(), depth=2):
            got.append(item)
    assert got == [1, 2]
    assert list(crops.prefetched(iter(range(5)))) == list(range(5))
