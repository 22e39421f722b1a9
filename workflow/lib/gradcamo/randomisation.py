"""Model randomisation check (Adebayo et al., 2018, "Sanity checks for saliency maps").

A map that does not change when the model's weights are destroyed measures the crop (its
geometry: every crop is centred on its cell), not the model. The check re-initialises the
trained model's weights from the top, cascading -- the classifier, then the head, then the
last blocks, one more at each level -- and scores the same cells' maps at every level:
Grad-CAMO, and the rank correlation of each randomised map with the trained one.

Arrays: crops ``(N, C, Z, Y, X)``, masks ``(N, Z, Y, X)``.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
from monai.networks.nets.efficientnet import EfficientNet
from scipy.stats import rankdata
from torch import nn

from gradcamo.gradcam import GradCamProfiler, gradcamo_score, upsample_cam


def cascade_levels(model: EfficientNet, stages: int | None = None) -> list[tuple[str, list[str]]]:
    """The cascade, top first: ``[(level name, module names re-initialised so far), ...]``.

    Level 1 is the classifier (``_fc``), level 2 adds the head (``_conv_head``, ``_bn1``),
    then each level adds one stage of blocks from the last (``_blocks.6``, ``_blocks.5``,
    ...), ``stages`` of them (None: every stage, and then the stem, ``_conv_stem`` and
    ``_bn0``: the whole network re-initialised, Adebayo et al.'s full cascade).
    """
    names = [f"_blocks.{name}" for name, _ in model._blocks.named_children()]
    every = stages is None or int(stages) >= len(names)
    chosen = names[::-1] if every else names[::-1][: max(int(stages), 0)]
    levels, so_far = [], ["_fc"]
    levels.append(("classifier", list(so_far)))
    so_far += ["_conv_head", "_bn1"]
    levels.append(("head", list(so_far)))
    for name in chosen:
        so_far.append(name)
        levels.append((name, list(so_far)))
    if every:
        so_far += ["_conv_stem", "_bn0"]
        levels.append(("stem", list(so_far)))
    return levels


def randomised_copy(model: nn.Module, modules: Sequence[str], seed: int) -> nn.Module:
    """A copy of ``model`` with the named modules' parameters (and batch-norm statistics)
    re-drawn from PyTorch's initialisation (``reset_parameters``), seeded; eval mode."""
    clone = copy.deepcopy(model)
    named = dict(clone.named_modules())
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        for name in modules:
            for sub in named[name].modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
                if hasattr(sub, "reset_running_stats"):
                    sub.reset_running_stats()
    finally:
        torch.random.set_rng_state(generator_state)
    return clone.eval()


def map_rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per cell, the Spearman correlation of two maps over the crop's voxels.

    ``a``, ``b``: ``(N, Z, Y, X)``; returns ``(N,)`` float64 (NaN where a map is constant).
    Adebayo et al.'s similarity of a randomised map to the trained one.
    """
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = np.corrcoef(rankdata(a[i]), rankdata(b[i]))[0, 1]
    return out


def maps_and_scores(
    profiler: GradCamProfiler, images: np.ndarray, masks: np.ndarray, batch_size: int, device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(maps (N, Z, Y, X) float32 at crop resolution, Grad-CAMO (N,), evidence (N,))`` of
    each cell's predicted class; evidence NaN without a profiler baseline."""
    shape = images.shape[2:]
    maps, scores, evidence = [], [], []
    for lo in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[lo : lo + batch_size], np.float32)).to(device)
        result = profiler(x, "predicted")
        cam = upsample_cam(result["cam"], shape)
        maps.append(cam.float().cpu().numpy())
        scores.append(
            gradcamo_score(cam, torch.from_numpy(np.array(masks[lo : lo + batch_size])).to(device))
            .cpu()
            .numpy()
        )
        evidence.append(result["evidence"].cpu().numpy() if "evidence" in result else np.full(len(x), np.nan))
    return np.concatenate(maps), np.concatenate(scores), np.concatenate(evidence)


def randomisation_table(
    model: EfficientNet,
    make_profiler: Callable[[nn.Module], GradCamProfiler],
    images: np.ndarray,
    masks: np.ndarray,
    stages: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    threshold: float = 0.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """Grad-CAMO of the same cells under the trained model and its cascading randomisations.

    Parameters
    ----------
    model: the trained model; make_profiler: builds the run's profiler for a model (same
        method, layer, baseline and steps).
    images, masks: the sampled cells' crops and masks.
    stages: how many stages of blocks below the head the cascade reaches (None: all, and
        the stem: :func:`cascade_levels`).
    seeds: one randomised copy per seed at every level (their spread is the null's).

    Returns one dict per (level, seed): ``level`` (``trained``, ``classifier``, ``head``,
    block names), ``depth`` (0 for the trained model), ``seed``, ``n_cells``,
    ``mean_gradcamo``, ``share_above`` (raw Grad-CAMO, every sampled cell: a randomised model
    has hardly any evidence, so the evidence gate would leave nothing to compare),
    ``shuffled_above`` (the share above for each mask on the next sampled cell's map),
    ``mean_evidence`` and ``map_spearman`` (mean over cells of the rank correlation with the
    trained map; 1 for the trained model).
    """
    model = model.eval()
    trained_maps, trained_scores, trained_evidence = maps_and_scores(
        make_profiler(model), images, masks, batch_size, device
    )

    def row(level, depth, seed, maps, scores, evidence, similarity):
        finite = scores[np.isfinite(scores)]
        # The shuffled baseline on the same cells: each mask on the next sampled cell's map.
        shuffled = gradcamo_score(np.roll(maps, -1, axis=0), masks)
        shuffled = shuffled[np.isfinite(shuffled)]
        return {
            "level": level,
            "depth": depth,
            "seed": seed,
            "n_cells": int(len(scores)),
            "mean_gradcamo": float(finite.mean()) if finite.size else float("nan"),
            "share_above": float((finite > threshold).mean()) if finite.size else float("nan"),
            "shuffled_above": float((shuffled > threshold).mean()) if shuffled.size else float("nan"),
            "mean_evidence": float(np.nanmean(evidence)) if np.isfinite(evidence).any() else float("nan"),
            "map_spearman": float(np.nanmean(similarity)) if np.isfinite(similarity).any() else float("nan"),
        }

    rows = [row("trained", 0, -1, trained_maps, trained_scores, trained_evidence, np.ones(len(images)))]
    log(
        f"trained model: mean Grad-CAMO {rows[0]['mean_gradcamo']:.3f}, "
        f"> {threshold}: {rows[0]['share_above']:.3f}"
    )
    for depth, (level, modules) in enumerate(cascade_levels(model, stages), start=1):
        for seed in seeds:
            clone = randomised_copy(model, modules, seed)
            maps, scores, evidence = maps_and_scores(make_profiler(clone), images, masks, batch_size, device)
            similarity = map_rank_correlation(trained_maps, maps)
            rows.append(row(level, depth, int(seed), maps, scores, evidence, similarity))
            log(
                f"randomised to {level} (seed {seed}): mean Grad-CAMO {rows[-1]['mean_gradcamo']:.3f}, "
                f"> {threshold}: {rows[-1]['share_above']:.3f}, map Spearman with the trained "
                f"{rows[-1]['map_spearman']:.3f}"
            )
    return rows


def randomisation_verdict(rows: Sequence[dict]) -> dict:
    """The summary of :func:`randomisation_table`.

    ``trained``: the trained model's share above the threshold, its shuffled baseline and
    mean Grad-CAMO; ``randomised``: every level's share (mean over seeds), and the deepest
    level's (the most randomised model's) range over seeds; ``within_spread``: True when the
    trained model's share is not above that range -- the map does not show that it depends
    on what the model learnt.
    """
    trained = [r for r in rows if r["depth"] == 0][0]
    randomised = [r for r in rows if r["depth"] > 0]
    deepest = max((r["depth"] for r in randomised), default=0)
    full = np.array([r["share_above"] for r in randomised if r["depth"] == deepest], np.float64)
    full = full[np.isfinite(full)]
    levels = {}
    for r in randomised:
        levels.setdefault(r["level"], []).append(r["share_above"])
    share_range = [float(full.min()), float(full.max())] if full.size else [None, None]
    similarity = [r["map_spearman"] for r in randomised if r["depth"] == deepest]
    return {
        "n_cells": trained["n_cells"],
        "trained": {
            "share_above": trained["share_above"],
            "shuffled_above": trained.get("shuffled_above"),
            "mean_gradcamo": trained["mean_gradcamo"],
        },
        "randomised": {
            "deepest_level": next((r["level"] for r in randomised if r["depth"] == deepest), None),
            "share_above_range": share_range,
            "map_spearman": float(np.nanmean(similarity)) if similarity else None,
            "share_above_by_level": {k: float(np.nanmean(v)) for k, v in levels.items()},
        },
        "within_spread": bool(share_range[1] is not None and trained["share_above"] <= share_range[1]),
    }
