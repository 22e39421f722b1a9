"""The mini dataset's confounded variant (gradcamo.synthetic.write_dataset), beside its sheet."""

from pathlib import Path

from gradcamo.logs import log_to
from gradcamo.synthetic import write_dataset

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
out = Path(sm.output[0]).parent
write_dataset(out, seed=sm.params.seed, confounded=True)
log.info("confounded variant (seed %d) written to %s", sm.params.seed, out)
