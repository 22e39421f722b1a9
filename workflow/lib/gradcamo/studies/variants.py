"""The crops a study derives from a workflow run's crop stores and labels.

- :func:`cell_context_store`: a well's ``crops.context: cell`` store from its full-context one
  (the context of every crop replaced by the plate's fill, seeded per cell exactly as the crop
  stage seeds it), so that the cell model sees the crops the crop stage would have written;
- :func:`counterpart_stores`: the test wells of the confounded variant cropped from the clean
  variant's z-stacks with the confounded run's own labels, normalisation and crop settings:
  the same cells, the debris shortcut removed (the variants differ only by the debris).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gradcamo.context import context_seeds, replace_context
from gradcamo.crops import write_well_store
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader
from gradcamo.store import CropStore, CropStoreWriter


def cell_context_store(full: Path, out: Path, fill: np.ndarray, margin: int, seed: int) -> Path:
    """The ``crops.context: cell`` store of a full-context one: the context of every crop
    replaced by the fill (C×Z×Y×X), seeded per cell as :func:`gradcamo.crops.crop_cells`
    seeds it. Written once: an existing store at ``out`` is kept."""
    out = Path(out)
    if (out / "store.json").exists():
        return out
    store = CropStore.open(full)
    writer = CropStoreWriter(
        out,
        len(store),
        store.channels,
        store.crop_shape,
        {**store.normalization, "context": "cell", "cell_margin": margin},
    )
    cells, masks = store.cells, np.asarray(store.masks)
    seeds = context_seeds(seed, cells["Metadata_Site"], cells["Metadata_ObjectNumber"])
    writer.write(replace_context(np.asarray(store.images, np.float32), masks, fill, margin, seeds), masks)
    writer.close(cells)
    return out


def counterpart_stores(
    confounded: Path, clean_sheet: pd.DataFrame, split: pd.DataFrame, config: dict, out: Path
) -> dict[tuple[str, str], Path]:
    """The test wells' crop stores from the clean z-stacks (``clean_sheet``: the clean
    variant's sample sheet, the rows of the sites the confounded run read, ``image`` paths
    absolute) with the labels and plate normalisation of the confounded variant's workflow
    run (the project folder ``confounded``), by (plate, well); ``split`` is that run's well
    split, ``config`` its configuration. Existing stores are kept."""
    sheet, confounded, out = clean_sheet, Path(confounded), Path(out)
    crops = config["crops"]
    paths = {}
    for row in split[split.split == "test"].itertuples(index=False):
        target = out / row.plate / row.well
        paths[row.plate, row.well] = target
        if (target / "store.json").exists():
            continue
        sites = sheet[(sheet.plate == row.plate) & (sheet.well == row.well)].sort_values("site")
        reference = json.loads((confounded / f"results/crops/{row.plate}/normalization.json").read_text())
        norm = crops["normalization"]
        write_well_store(
            target,
            labelled_sites(
                open_reader(ImageSettings.from_config(config)),
                [Site(row.plate, row.well, int(s.site), image=str(s.image)) for s in sites.itertuples()],
                [
                    str(confounded / f"results/segment/{row.plate}/{row.well}/site{s.site}.tif")
                    for s in sites.itertuples()
                ],
            ),
            {
                "plate": row.plate,
                "well": row.well,
                **{k: sites.iloc[0][k] for k in ("treatment", "concentration", "control") if k in sites},
            },
            config["channels"],
            crops["shape"],
            normalization={
                k: norm[k] for k in ("scope", "reference", "lower_percentile", "upper_percentile")
            },
            bounds=None if reference["bounds"] is None else np.asarray(reference["bounds"]),
            filters=crops["filters"],
            cell_margin=crops["cell_margin"],
            seed=crops["fill"]["seed"],
        )
    return paths


def read_wells(path: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """``(wells, fills)``: a study's well table (the split with columns ``store``, each
    well's crop store, and ``fill``, its plate's fill) and the plates' fills (C×Z×Y×X) by
    plate, as every study job reads them."""
    wells = pd.read_csv(path, sep="\t", dtype=str)
    fills = {plate: np.load(fill) for plate, fill in dict(zip(wells.plate, wells.fill)).items()}
    return wells, fills
