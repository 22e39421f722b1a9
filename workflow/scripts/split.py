"""Assign wells to train / val / test (results/split/wells.tsv)."""

import pandas as pd
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.split import split_wells

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821

table = split_wells(pd.DataFrame(sm.params.wells), sm.params.fractions, sm.params.seed)
counts = table.groupby(["treatment", "split"]).size().unstack(fill_value=0)
log.info("wells per treatment and split:\n%s", counts.to_string())
with atomic_path(sm.output[0]) as tmp:
    table.to_csv(tmp, sep="\t", index=False)
