"""Inter-channel correlation of one plate over the voxels of its cells (from the crop stores)."""

from pathlib import Path

import numpy as np
import pandas as pd
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.qc import channel_correlation, correlation_from_moments, plot_channel_correlation
from gradcamo.store import CropStore

log = log_to(snakemake.log[0])
channels = list(snakemake.params.channels)
moments, total = np.zeros((len(channels) + 1,) * 2), 0
for store_json in snakemake.input:
    store = CropStore.open(Path(store_json).parent)
    for lo in range(0, len(store), 256):  # bounded memory: a block of cells at a time
        block, n = channel_correlation(store.images[lo : lo + 256], store.masks[lo : lo + 256])
        moments, total = moments + block, total + n
correlation = correlation_from_moments(moments) if total else np.full((len(channels),) * 2, np.nan)
table = pd.DataFrame(correlation, index=channels, columns=channels)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index_label="channel")
with atomic_path(snakemake.output.figure) as tmp:
    plot_channel_correlation(correlation, channels, snakemake.wildcards.plate, total, tmp)
log.info("plate %s: %d cell voxels\n%s", snakemake.wildcards.plate, total, table.round(2).to_string())
