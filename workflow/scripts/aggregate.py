"""Single-cell and well tables, sphering, phenotypic activity (mAP) and the run summary."""

import json
import logging

from gradcamo.logs import log_to

log = log_to(snakemake.log[0])
logging.getLogger("copairs").setLevel(logging.WARNING)  # one INFO line per step otherwise

# (imports after logging is set up)
from gradcamo.aggregate import read_profile_tables, well_profiles  # noqa: E402
from gradcamo.errors import InputError  # noqa: E402
from gradcamo.evaluation import activity_table  # noqa: E402
from gradcamo.io import atomic_path  # noqa: E402
from gradcamo.sphering import apply_sphering, fit_control_sphering, sphere_profiles  # noqa: E402
from gradcamo.summary import summary  # noqa: E402

params = snakemake.params
cells, empty_wells = read_profile_tables(snakemake.input.profiles)
log.info(
    "%d cells from %d wells (%d without cells)", len(cells), len(snakemake.input.profiles), len(empty_wells)
)
wells = well_profiles(cells, params.gradcamo_threshold)
wells_sphered = sphere_profiles(
    wells, params.control, params.sphering_epsilon, params.sphering_method, "wells"
)
# Single cells are sphered on the control cells (all splits) for the cell-level mAP.
cell_sphering = fit_control_sphering(
    cells, params.control, params.sphering_epsilon, params.sphering_method, "cells"
)
test_cells = apply_sphering(cells[cells["Metadata_Split"] == "test"], cell_sphering)
activity = activity_table(
    wells_sphered,
    test_cells,
    params.control,
    gradcamo_threshold=params.gradcamo_threshold,
    max_cells_per_treatment=params.map_max_cells_per_treatment,
    null_size=params.map_null_size,
    seed=params.map_seed,
)
try:
    metrics = json.loads(open(snakemake.input.metrics).read())
except json.JSONDecodeError as exc:
    raise InputError(f"{snakemake.input.metrics}: not valid JSON ({exc})") from None
info = summary(
    cells,
    wells,
    empty_wells,
    metrics,
    activity,
    params.control,
    params.gradcamo_threshold,
    attribution=params.attribution,
    checks={
        name: json.loads(open(snakemake.input[name]).read())
        for name in ("randomisation", "planted")
        if name in snakemake.input.keys()
    },
)

out = snakemake.output
cell_sphering.save(out.cell_sphering)
for table, path in (
    (cells, out.cells),
    (wells, out.wells),
    (wells_sphered, out.wells_sphered),
    (activity, out.map),
):
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
with atomic_path(out.summary) as tmp:
    tmp.write_text(json.dumps(info, indent=2, allow_nan=False))
log.info("Grad-CAMO: %s", info["gradcamo"])
