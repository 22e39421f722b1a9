"""Logging for the workflow's jobs: everything a job prints goes to its log file."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from gradcamo import __version__


def log_to(path: str | os.PathLike, level: int = logging.INFO) -> logging.Logger:
    """Send logging records, warnings, progress bars and tracebacks to ``path``.

    Standard error is redirected to the file (line-buffered), so tqdm progress and an
    uncaught exception's traceback end up in the job's log, as a cluster user expects.
    The first line says where the job runs: the host and, inside a SLURM job, its job id
    and partition (what a cluster user greps for, and what the SLURM test checks).
    Returns the ``gradcamo`` logger.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        level=level,
        stream=stream,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    log = logging.getLogger("gradcamo")
    log.info("running on %s", where())
    # Which library ran: from a clone, or copied out of a module's git source.
    log.info("gradcamo %s from %s", __version__, Path(__file__).resolve().parent)
    return log


def where() -> str:
    """``"host <name>, SLURM job <id> (partition <p>)"`` inside a SLURM job, else ``"host
    <name>, outside SLURM"``."""
    host = socket.gethostname()
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return f"host {host}, outside SLURM"
    return f"host {host}, SLURM job {job} (partition {os.environ.get('SLURM_JOB_PARTITION', '?')})"
