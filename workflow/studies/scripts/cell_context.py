"""A variant's crop stores with crops.context: cell (gradcamo.studies.variants.cell_context_store)."""

from pathlib import Path

import numpy as np
import pandas as pd
from gradcamo.logs import log_to
from gradcamo.studies.variants import cell_context_store

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
wells = pd.read_csv(sm.input[0], sep="\t", dtype=str)
stores = Path(sm.output.stores)
fills = {path: np.load(path) for path in wells.fill.unique()}
wells["store"] = [
    str(
        cell_context_store(
            Path(s), stores / p / w, fills[f], sm.params.cell_margin, sm.params.fill_seed
        ).absolute()
    )
    for s, p, w, f in zip(wells.store, wells.plate, wells.well, wells.fill)
]
wells.to_csv(sm.output.wells, sep="\t", index=False)
log.info("%d wells' stores with the context replaced by the plate's fill", len(wells))
