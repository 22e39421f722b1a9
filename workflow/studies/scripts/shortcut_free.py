"""The confounded test wells cropped from the clean z-stacks with the confounded run's labels
(gradcamo.studies.variants.counterpart_stores): the same cells without the shortcut."""

from pathlib import Path

import pandas as pd
from gradcamo.logs import log_to
from gradcamo.studies.variants import counterpart_stores

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
wells = pd.read_csv(sm.input.wells, sep="\t", dtype=str)
# the clean sheet's rows of the sites the confounded run read (its own sheet), images absolute
project = Path(sm.params.project)
read = pd.read_csv(project / "config" / "samples.tsv", sep="\t")[["plate", "well", "site"]]
clean = pd.read_csv(sm.input.clean_sheet, sep="\t").merge(read, on=["plate", "well", "site"])
clean["image"] = [str((Path(sm.input.clean_sheet).parent / p).absolute()) for p in clean.image]
paths = counterpart_stores(project, clean, wells, sm.params.main_config, Path(sm.output.stores))
test = wells[wells.split == "test"].copy()
test["store"] = [str(paths[p, w].absolute()) for p, w in zip(test.plate, test.well)]
test.to_csv(sm.output.wells, sep="\t", index=False)
log.info("%d test wells without the shortcut", len(test))
