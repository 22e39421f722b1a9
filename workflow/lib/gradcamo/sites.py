"""One labelled site as the array-level stages see it: its number, a name for messages, and
how to get its z-stack and label image. Who reads files builds it (:func:`gradcamo.readers.
labelled_sites`); the crop and normalisation functions only call it, one site at a time, so
their memory stays bounded by one site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gradcamo.errors import InputError


@dataclass(frozen=True)
class SiteSource:
    """One site of a well.

    site: the site's number in its well.
    name: what to name in messages (its file, or plate/well/site).
    zstack: returns the site's ``(Z, C, Y, X)`` z-stack.
    labels: returns its ``(Z, Y, X)`` label image (0 = background).
    """

    site: int
    name: str
    zstack: Callable[[], np.ndarray]
    labels: Callable[[], np.ndarray]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(zstack, labels)``, the labels checked against the z-stack's shape."""
        zstack = self.zstack()
        labels = self.labels()
        if tuple(labels.shape) != (zstack.shape[0], *zstack.shape[2:]):
            raise InputError(
                f"{self.name}: label image has shape {tuple(labels.shape)} (ZYX) but its z-stack "
                f"has {(zstack.shape[0], *zstack.shape[2:])}"
            )
        return zstack, labels
