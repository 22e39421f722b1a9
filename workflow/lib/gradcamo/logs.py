"""Logging for the workflow's jobs: everything a job prints goes to its log file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def log_to(path: str | os.PathLike, level: int = logging.INFO) -> logging.Logger:
    """Send logging records, warnings, progress bars and tracebacks to ``path``.

    Standard error is redirected to the file (line-buffered), so tqdm progress and an
    uncaught exception's traceback end up in the job's log, as a cluster user expects.
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
    return logging.getLogger("gradcamo")
