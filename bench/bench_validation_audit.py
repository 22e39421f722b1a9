"""What the per-epoch validation audit adds to an epoch of training (``train.audit_cells``).

In one process, on random crops and a randomly initialised 3D EfficientNet-b0:

- a training epoch: ``--draws`` training draws in AdamW steps of ``--batch`` cells
  (forward, backward, step), as :func:`gradcamo.training.train_one_epoch` runs them;
- the audit: the accuracy from the cell alone and from the context alone of ``--val``
  validation cells (:func:`gradcamo.validation_audit.audit_accuracies`: two evaluation passes over
  counterfactual crops kept in memory), and, for scale, the one evaluation pass over the
  same cells that every epoch already runs.

Prints seconds and the audit's cost as a share of the epoch. The default is the mini
dataset's epoch (496 draws of 5x12x32x32 in batches of 8, 246 validation cells).

Usage: .venv/bin/python bench/bench_validation_audit.py [--crop 21 128 128 --draws 64 --val 64]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from gradcamo.model import build_model
from gradcamo.prediction import predict_crops
from gradcamo.validation_audit import Counterfactuals, audit_accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, nargs=3, default=(12, 32, 32), metavar=("Z", "Y", "X"))
    parser.add_argument("--draws", type=int, default=496)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--val", type=int, default=246)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model("b0", 5, 4, args.crop)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.rand(args.batch, 5, *args.crop)
    labels = torch.randint(0, 4, (args.batch,))
    val = torch.rand(args.val, 5, *args.crop).half()
    counterfactuals = Counterfactuals(val, val.clone(), np.zeros(args.val, np.int64))
    eval_batch = max(64, 2 * args.batch)

    model.train()  # warm-up: the first steps allocate
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), labels).backward()
        optimizer.step()
    start = time.perf_counter()
    for _ in range(args.draws // args.batch):
        model.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), labels).backward()
        optimizer.step()
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    predict_crops(model, val, eval_batch, device)
    one_pass = time.perf_counter() - start
    start = time.perf_counter()
    audit_accuracies(model, counterfactuals, eval_batch, device)
    audit = time.perf_counter() - start
    print(
        json.dumps(
            {
                "crop": list(args.crop),
                "threads": args.threads,
                "training_epoch_s": round(epoch, 2),
                "validation_pass_s": round(one_pass, 2),
                "audit_s": round(audit, 2),
                "audit_share_of_epoch": round(audit / epoch, 3),
                "audit_over_validation_pass": round(audit / one_pass, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
