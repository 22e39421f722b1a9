"""Seconds per training step with the attention penalty against without (``make bench``).

Same process, same model, same batch: a plain step (forward, cross-entropy, backward, AdamW)
against a penalised step (:class:`gradcamo.penalty.PenalisedModel`: forward, the map's
gradient with ``create_graph=True``, the penalty, the backward through both), for each
penalised method, at the mini dataset's crop size and at the paper's 5x21x128x128. Steps of
the variants are interleaved and the ratio is of medians, so load on a shared machine
affects both sides alike. The target is at most 2.5x.

    .venv/bin/python bench/bench_penalty.py
    .venv/bin/python bench/bench_penalty.py --device cuda --batch 32 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from gradcamo.model import build_model, set_drop_connect_rate
from gradcamo.penalty import AttentionPenalty, PenalisedModel

SHAPES = {"mini": (12, 32, 32), "paper": (21, 128, 128)}
METHODS = (("input_x_gradient", None), ("layercam", 8), ("gradcam", 8), ("rrr", None))


def step_function(model, optimizer, penalised, images, labels, masks):
    def step() -> float:
        start = time.perf_counter()
        if penalised is None:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        else:
            logits, penalty, _ = penalised(images, labels, masks)
            loss = (
                torch.nn.functional.cross_entropy(logits, labels) + penalised.penalty.weight * penalty.mean()
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs=2, default=[8, 2], help="batch at mini and paper size")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} threads, {args.steps} timed steps per variant (median)")
    print("| crops | batch | method | layer | s/step plain | s/step penalised | ratio |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for (name, shape), batch in zip(SHAPES.items(), args.batch):
        torch.manual_seed(0)
        model = build_model("b0", 5, 4, shape).to(device).train()
        set_drop_connect_rate(model, 0.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        images = torch.rand(batch, 5, *shape, device=device)
        labels = torch.arange(batch, device=device) % 4
        masks = torch.zeros(batch, *shape, dtype=torch.uint8, device=device)
        z, y, x = shape
        masks[:, z // 4 : 3 * z // 4, y // 4 : 3 * y // 4, x // 4 : 3 * x // 4] = 1
        variants = {"plain": step_function(model, optimizer, None, images, labels, masks)}
        layers = {}
        for method, resolution in METHODS:
            settings = AttentionPenalty(1.0, method, "_blocks.2", resolution, 2)
            layers[method] = settings.layer(model, shape)
            penalised = PenalisedModel(model, settings, layers[method])
            variants[method] = step_function(model, optimizer, penalised, images, labels, masks)
        for step in variants.values():  # warm-up
            step()
        times = {key: [] for key in variants}
        for _ in range(args.steps):
            for key, step in variants.items():
                times[key].append(step())
        plain = statistics.median(times["plain"])
        for method, _ in METHODS:
            seconds = statistics.median(times[method])
            worst = max(worst, seconds / plain)
            print(
                f"| {name} {'x'.join(map(str, shape))} | {batch} | {method} | {layers[method]} | "
                f"{plain:.3f} | {seconds:.3f} | {seconds / plain:.2f}x |",
                flush=True,
            )
    print(f"penalised step / plain step: at most {worst:.2f}x (target 2.5x)")


if __name__ == "__main__":
    main()
