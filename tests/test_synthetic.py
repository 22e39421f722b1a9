"""The synthetic mini dataset: reproducible, well laid out, realistic labels, learnable effects,
and a confounder that lives outside cells only."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import zstack
from gradcamo.errors import InputError
from gradcamo.io import read_labels
from gradcamo.synthetic import (
    CHANNELS,
    CONTROL,
    SHEET_COLUMNS,
    VOXEL_SIZE,
    WELLS,
    SynthesisParams,
    plate_map,
    site_seed,
    synthesize_site,
    write_dataset,
)
from scipy import ndimage
from skimage.filters import threshold_otsu

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "resources" / "mini"
SCRIPT = ROOT / "workflow" / "scripts" / "make_mini_dataset.py"


def load_site(folder: Path, row) -> tuple[np.ndarray, np.ndarray]:
    image = zstack(folder / row.image, CHANNELS, voxel_size=VOXEL_SIZE)
    return image, read_labels(folder / row.labels, (image.shape[0], *image.shape[2:]))


@pytest.fixture(scope="module")
def bundled_sheet() -> pd.DataFrame:
    return pd.read_csv(BUNDLED / "samples.tsv", sep="\t")


@pytest.fixture(scope="module")
def bundled(bundled_sheet) -> list[tuple[object, np.ndarray, np.ndarray]]:
    return [(row, *load_site(BUNDLED, row)) for row in bundled_sheet.itertuples()]


@pytest.fixture(scope="module")
def confounded_dir(tmp_path_factory) -> Path:
    """The confounded variant, made by the documented command line's entry point."""
    out = tmp_path_factory.mktemp("confounded")
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main(["--out", str(out), "--seed", "0", "--confounded"]) == 0
    return out


def test_bundled_dataset_regenerates_exactly(tmp_path, bundled_sheet, bundled):
    sheet = write_dataset(tmp_path, seed=0)
    assert (tmp_path / "samples.tsv").read_text() == (BUNDLED / "samples.tsv").read_text()
    assert sheet["control"].dtype == bool
    for row, image, labels in bundled:
        new_image, new_labels = load_site(tmp_path, row)
        np.testing.assert_array_equal(new_image, image, err_msg=row.image)
        np.testing.assert_array_equal(new_labels, labels, err_msg=row.labels)


def test_sheet_layout(bundled_sheet):
    sheet = bundled_sheet
    assert tuple(sheet.columns) == SHEET_COLUMNS
    assert len(sheet) == 2 * 8 * 3  # plates x wells x sites
    assert sheet.equals(sheet.sort_values(["plate", "well", "site"], ignore_index=True))
    for plate, wells in sheet.groupby("plate"):
        assert sorted(wells["well"].unique()) == sorted(WELLS)
        per_treatment = wells.drop_duplicates("well").groupby("treatment").size()
        treatments = ["CompoundA", "CompoundB", "CompoundC", CONTROL]
        assert per_treatment.to_dict() == {t: 2 for t in treatments}
    for plate, well in [("P1", "B02"), ("P1", "C03"), ("P2", "B02"), ("P2", "C03")]:
        assert ((sheet.plate == plate) & (sheet.well == well) & (sheet.site == 1)).sum() == 1
    # Well position does not predict treatment: no well has the same treatment on both plates.
    one_row_per_well = sheet.drop_duplicates(["plate", "well"])
    by_well = one_row_per_well.pivot(index="well", columns="plate", values="treatment")
    assert (by_well["P1"] != by_well["P2"]).all()
    assert sheet.groupby(["plate", "well"])["treatment"].nunique().eq(1).all()
    assert (sheet["control"] == (sheet["treatment"] == CONTROL)).all()
    assert (sheet.loc[sheet.control, "concentration"] == 0).all()
    assert (sheet.loc[~sheet.control, "concentration"] > 0).all()
    raw = pd.read_csv(BUNDLED / "samples.tsv", sep="\t", dtype=str)
    assert raw["control"].isin(["true", "false"]).all()
    for rel in list(sheet["image"]) + list(sheet["labels"]):
        assert not Path(rel).is_absolute() and (BUNDLED / rel).is_file()


def test_bundled_size_fits_the_repository():
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total <= 13 * 2**20  # 48 sites: about 12.1 MiB


def test_images_and_labels_shape_and_content(bundled):
    params = SynthesisParams()
    nz, ny, nx = params.shape
    assert nz >= 12
    for row, image, labels in bundled:
        assert image.dtype == np.uint16 and image.shape == (nz, len(CHANNELS), ny, nx)
        n_cells = labels.max()
        assert 12 <= n_cells <= 25, row.image
        assert set(np.unique(labels)) == set(range(n_cells + 1))
        # Cells are flat: wider (µm) in Y and X than tall in Z, away from the border.
        dz, dy, dx = VOXEL_SIZE
        for sl in ndimage.find_objects(labels):
            if sl[1].start > 0 and sl[2].start > 0 and sl[1].stop < ny and sl[2].stop < nx:
                height = (sl[0].stop - sl[0].start) * dz
                width = max((sl[1].stop - sl[1].start) * dy, (sl[2].stop - sl[2].start) * dx)
                assert height < width, row.image
        # Every channel stains cells: their mean stands out of the background's noise.
        inside = labels > 0
        for c in range(len(CHANNELS)):
            background = image[:, c][~inside].astype(float)
            contrast = image[:, c][inside].mean() - background.mean()
            assert contrast > 2 * background.std(), (row.image, CHANNELS[c])


def test_labels_touch_the_border_and_each_other(bundled):
    touching_border = touching_pairs = 0
    for _, _, labels in bundled:
        edge = np.concatenate(
            [labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
        )
        touching_border += len(np.unique(edge[edge > 0]))
        for axis in (1, 2):
            a = np.moveaxis(labels, axis, 0)
            left, right = a[:-1], a[1:]
            contact = (left > 0) & (right > 0) & (left != right)
            touching_pairs += len({tuple(sorted(p)) for p in zip(left[contact], right[contact])})
    n_sites = len(bundled)
    assert touching_border >= 2 * n_sites
    assert touching_pairs >= 3 * n_sites


def nuclear_volumes(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Voxels per cell above the site's Otsu threshold of DNA inside cells."""
    dna = image[:, CHANNELS.index("DNA")].astype(float)
    nucleus = dna > threshold_otsu(dna[labels > 0])
    return ndimage.sum_labels(nucleus, labels, index=np.arange(1, labels.max() + 1))


def test_compound_a_enlarges_nuclei_with_overlap(bundled):
    volumes: dict[str, list[float]] = {}
    for row, image, labels in bundled:
        volumes.setdefault(row.treatment, []).extend(nuclear_volumes(image, labels))
    control, treated = np.array(volumes[CONTROL]), np.array(volumes["CompoundA"])
    control, treated = control[control > 0], treated[treated > 0]
    assert treated.mean() > 1.15 * control.mean()
    # Overlapping distributions: many treated nuclei are smaller than the largest controls.
    assert (treated < np.percentile(control, 90)).mean() > 0.2


def texture_contrast(image: np.ndarray, labels: np.ndarray, channel: str) -> np.ndarray:
    """Per-cell coefficient of variation of a channel above the camera offset."""
    values = image[:, CHANNELS.index(channel)].astype(float) - SynthesisParams().camera_offset
    index = np.arange(1, labels.max() + 1)
    return np.sqrt(ndimage.variance(values, labels, index)) / ndimage.mean(values, labels, index)


def test_compounds_b_and_c_change_mito_and_er_texture(bundled):
    contrast: dict[tuple[str, str], list[float]] = {}
    for row, image, labels in bundled:
        for channel in ("Mito", "ER"):
            contrast.setdefault((row.treatment, channel), []).extend(texture_contrast(image, labels, channel))
    median = {key: np.median(values) for key, values in contrast.items()}
    # Fragmented (punctate) mitochondria are patchier than a tubular network ...
    assert median["CompoundB", "Mito"] > 1.1 * median[CONTROL, "Mito"]
    # ... and coarse ER clumps patchier than a fine reticulum.
    assert median["CompoundC", "ER"] > median[CONTROL, "ER"]
    assert median["CompoundC", "ER"] > median["CompoundB", "ER"]


def test_confounder_lives_outside_cells_and_encodes_treatment(bundled, confounded_dir):
    sheet = pd.read_csv(confounded_dir / "samples.tsv", sep="\t")
    params = SynthesisParams()
    conf_channels = [CHANNELS.index(c) for c in params.confounder_channels]
    clean_stats, conf_stats, treatments = [], [], []
    for (row, image, labels), conf_row in zip(bundled, sheet.itertuples()):
        assert (conf_row.plate, conf_row.well, conf_row.site) == (row.plate, row.well, row.site)
        conf_image, conf_labels = load_site(confounded_dir, conf_row)
        np.testing.assert_array_equal(conf_labels, labels)
        inside = np.broadcast_to((labels > 0)[:, None], image.shape)
        np.testing.assert_array_equal(conf_image[inside], image[inside])
        changed = conf_image != image
        assert changed.any() == (row.treatment != CONTROL), "debris in treated wells only"
        code = list(params.effects).index(row.treatment)
        for bit, c in enumerate(conf_channels):  # the treatment's code, bit by bit
            assert changed[:, c].any() == bool(code & (1 << bit)), (row.treatment, CHANNELS[c])
        # Debris is local: specks, not a change of the whole background.
        assert changed[:, conf_channels].mean() < 0.2
        assert not changed[:, [c for c in range(len(CHANNELS)) if c not in conf_channels]].any()
        background = labels == 0
        clean_stats.append([image[:, c][background].mean() for c in conf_channels])
        conf_stats.append([conf_image[:, c][background].mean() for c in conf_channels])
        treatments.append(row.treatment)

    def explained_variance(values: np.ndarray) -> float:
        """Share of the variance of per-site background means explained by treatment (eta²)."""
        frame = pd.DataFrame({"v": values, "t": treatments})
        group_means = frame.groupby("t")["v"].transform("mean")
        return 1 - ((frame.v - group_means) ** 2).sum() / ((frame.v - frame.v.mean()) ** 2).sum()

    for k in range(len(conf_channels)):
        conf = explained_variance(np.array(conf_stats)[:, k])
        clean = explained_variance(np.array(clean_stats)[:, k])
        # Local specks move a site's background mean less than a global offset did (> 0.9).
        assert conf > 0.8 and conf > clean + 0.5


def test_sites_are_seeded_and_order_independent():
    params = SynthesisParams(shape=(12, 48, 48), cells_per_site=(4, 6))
    first = synthesize_site(np.random.default_rng(site_seed(3, "P1", "B02", 1)), "DMSO", params)
    synthesize_site(np.random.default_rng(site_seed(3, "P1", "B03", 1)), "DMSO", params)
    again = synthesize_site(np.random.default_rng(site_seed(3, "P1", "B02", 1)), "DMSO", params)
    other = synthesize_site(np.random.default_rng(site_seed(4, "P1", "B02", 1)), "DMSO", params)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert plate_map(0).equals(plate_map(0)) and not plate_map(0).equals(plate_map(1))


def test_confounded_command_refuses_the_bundled_folder():
    main = runpy.run_path(str(SCRIPT))["main"]
    with pytest.raises(InputError, match="clean variant"):
        main(["--out", str(BUNDLED), "--confounded"])


def test_unknown_treatment_is_an_input_error():
    with pytest.raises(InputError, match="Taxol"):
        synthesize_site(np.random.default_rng(0), "Taxol")


def test_the_test_sheet_lists_the_bundled_dataset(bundled_sheet):
    """.test/config/samples.tsv (make demo's sheet) is the bundled sheet, paths relative to it."""
    sheet = pd.read_csv(ROOT / ".test" / "config" / "samples.tsv", sep="\t")
    for column in ("image", "labels"):
        assert sheet[column].str.startswith("../../resources/mini/").all()
        sheet[column] = sheet[column].str.replace("../../resources/mini/", "", regex=False)
    pd.testing.assert_frame_equal(sheet, bundled_sheet)
