"""Job logs: the first line says where the job ran (the SLURM test relies on it)."""

from __future__ import annotations

import logging
import sys

from gradcamo.logs import log_to, where


def test_the_log_names_the_slurm_job_and_partition(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    stderr = sys.stderr
    try:
        log_to(tmp_path / "job.log")
    finally:
        sys.stderr = stderr
        logging.basicConfig(force=True)
    first = (tmp_path / "job.log").read_text().splitlines()[0]
    assert first.endswith("SLURM job 4242 (partition gpu)"), first
    monkeypatch.delenv("SLURM_JOB_ID")
    assert where().endswith("outside SLURM")
