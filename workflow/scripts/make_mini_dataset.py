"""Generate the synthetic 3D Cell Painting mini dataset (command line, not a Snakemake script).

    .venv/bin/python workflow/scripts/make_mini_dataset.py --out resources/mini \
        [--seed 0] [--confounded]

Writes ``OUT/images/*.tif`` (ZCYX uint16 OME-TIFF), ``OUT/labels/*.tif`` (ZYX ground truth)
and ``OUT/samples.tsv``. ``--confounded`` plants a treatment-coded background pattern (a
shortcut outside the cells); the bundled ``resources/mini`` is the clean variant, so the
confounded one must go to another folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradcamo.errors import InputError
from gradcamo.synthetic import write_dataset

BUNDLED = Path(__file__).resolve().parents[2] / "resources" / "mini"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate the seeded synthetic 3D Cell Painting mini dataset."
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (images/, labels/, samples.tsv)"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument(
        "--confounded",
        action="store_true",
        help="add a treatment-coded pattern to the background outside cells",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.confounded and args.out.resolve() == BUNDLED:
        raise InputError(
            f"--out {args.out}: the bundled dataset is the clean variant; "
            "write the confounded one to another folder"
        )
    sheet = write_dataset(args.out, seed=args.seed, confounded=args.confounded, progress=True)
    counts = sheet.drop_duplicates(["plate", "well"]).groupby("treatment").size()
    print(
        f"wrote {len(sheet)} sites ({', '.join(f'{t}: {n} wells' for t, n in counts.items())}) "
        f"to {args.out / 'samples.tsv'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
