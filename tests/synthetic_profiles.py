"""Synthetic per-well profile tables (+ crop stores and Grad-CAMs) for the aggregate tests.

Two plates; treatments DMSO (control), ACTIVE (a strong shift of the features), INERT (no
effect: same distribution as DMSO) and SINGLE (one well only); one INERT well is empty;
about 10 % of cells have no Grad-CAMO (NaN). Cells of a well share a small well offset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from gradcamo.store import CropStoreWriter

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
CROP = (4, 16, 16)
N_FEATURES = 24
CONTROL = "DMSO"
#: (plate, well, treatment, split, n_cells)
WELLS = [
    ("P1", "B02", "DMSO", "train", 14),
    ("P1", "B03", "DMSO", "test", 12),
    ("P1", "B04", "DMSO", "val", 10),
    ("P1", "C02", "ACTIVE", "train", 12),
    ("P1", "C03", "ACTIVE", "test", 11),
    ("P1", "D02", "INERT", "train", 13),
    ("P1", "D03", "INERT", "test", 12),
    ("P1", "E02", "SINGLE", "test", 9),
    ("P2", "B02", "DMSO", "train", 12),
    ("P2", "B03", "DMSO", "test", 13),
    ("P2", "C02", "ACTIVE", "val", 10),
    ("P2", "C03", "ACTIVE", "test", 12),
    ("P2", "D02", "INERT", "val", 11),
    ("P2", "D03", "INERT", "test", 12),
    ("P2", "D04", "INERT", "train", 0),
]


def feature_names(n: int = N_FEATURES) -> list[str]:
    return [f"emb_{i:04d}" for i in range(n)]


def well_table(plate, well, treatment, split, n_cells, rng, effect) -> pd.DataFrame:
    """One well's profile table with the profile stage's columns and dtypes."""
    shift = effect if treatment == "ACTIVE" else np.zeros_like(effect)
    offset = rng.normal(0, 0.15, effect.size)
    features = rng.normal(0, 1, (n_cells, effect.size)) + shift + offset
    scores = rng.beta(2, 3, n_cells)
    scores[rng.random(n_cells) < 0.1] = np.nan
    table = pd.DataFrame(
        {
            "Metadata_Plate": pd.Series([plate] * n_cells, dtype=object),
            "Metadata_Well": pd.Series([well] * n_cells, dtype=object),
            "Metadata_Site": np.ones(n_cells, np.int64),
            "Metadata_ObjectNumber": np.arange(1, n_cells + 1, dtype=np.int64),
            "Metadata_Treatment": pd.Series([treatment] * n_cells, dtype=object),
            "Metadata_Concentration": np.full(n_cells, 0.0 if treatment == CONTROL else 1.0),
            "Metadata_Control": np.full(n_cells, treatment == CONTROL),
            "Metadata_Centroid_Z": rng.uniform(0, 10, n_cells),
            "Metadata_Volume": rng.integers(200, 900, n_cells).astype(np.int64),
            "Metadata_Split": pd.Series([split] * n_cells, dtype=object),
            "Metadata_Predicted": pd.Series([treatment] * n_cells, dtype=object),
            "Metadata_Probability": rng.uniform(0.3, 1, n_cells).astype(np.float32),
            "Metadata_GradCAMO": scores.astype(np.float32),
        }
    )
    feats = pd.DataFrame(features.astype(np.float32), columns=feature_names(effect.size))
    return pd.concat([table, feats], axis=1)


def write_profiles(root: Path, seed: int = 0, wells=WELLS, crops: bool = False) -> list[Path]:
    """Write ``root/results/profiles/{plate}/{well}.parquet`` (+ ``.attributions.npy`` and crop stores
    ``root/results/crops/{plate}/{well}/`` when ``crops``); returns the table paths."""
    rng = np.random.default_rng(seed)
    effect = np.zeros(N_FEATURES)
    effect[: N_FEATURES // 2] = 1.5
    paths = []
    for plate, well, treatment, split, n in wells:
        table = well_table(plate, well, treatment, split, n, rng, effect)
        path = root / "results" / "profiles" / plate / f"{well}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)
        paths.append(path)
        if crops:
            write_crops(root / "results" / "crops" / plate / well, table, rng)
            cams = rng.random((n, *CROP)).astype(np.float16)
            np.save(path.with_name(f"{well}.attributions.npy"), cams)
    return paths


def write_crops(folder: Path, table: pd.DataFrame, rng) -> None:
    """A crop store for the table's cells: a bright blob (the cell) in each crop."""
    n = len(table)
    writer = CropStoreWriter(folder, n, CHANNELS, CROP, {"scope": "site"})
    z, y, x = np.indices(CROP)
    blob = ((y - 8) ** 2 + (x - 8) ** 2 < 25) & (z > 0)
    neighbour = ((y - 2) ** 2 + (x - 13) ** 2 < 6) & (z > 0)
    if n:
        masks = np.zeros((n, *CROP), np.uint8)
        masks[:, blob] = 1
        masks[:, neighbour] = 2
        images = rng.random((n, len(CHANNELS), *CROP)).astype(np.float32) * 0.2
        images += (masks > 0)[:, None] * rng.uniform(0.5, 1.0, (n, len(CHANNELS), 1, 1, 1))
        writer.write(images, masks)
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]
    writer.close(table[keys])
