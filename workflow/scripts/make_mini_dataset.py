"""Generate the synthetic 3D Cell Painting mini dataset (command line, not a Snakemake script).

    .venv/bin/python workflow/scripts/make_mini_dataset.py --out resources/mini \
        [--seed 0] [--confounded] [--geometry mini|paper] [--workers 1]

Writes ``OUT/images/*.tif`` (ZCYX uint16 OME-TIFF), ``OUT/labels/*.tif`` (ZYX ground truth)
and ``OUT/samples.tsv``. ``--confounded`` plants a treatment-coded background pattern (a
shortcut outside the cells); the bundled ``resources/mini`` is the clean variant, so the
confounded one must go to another folder. ``--geometry paper`` writes instead the small
screen at the paper's geometry (21 x 512 x 512 sites, cells about 62 px across, one plate of
8 wells and a nearly empty extra site; ``gradcamo.synthetic.PAPER_LAYOUT``) that
``.test/paper/`` runs the screen template on; it is never bundled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradcamo.errors import InputError
from gradcamo.synthetic import GEOMETRIES, write_dataset

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
    parser.add_argument(
        "--geometry",
        choices=sorted(GEOMETRIES),
        default="mini",
        help="mini: the bundled dataset (2 plates x 8 wells x 3 sites of 12x96x96); paper: "
        "a screen at the paper's geometry (1 plate x 8 wells, 21x512x512 sites, cells ~62 px "
        "across, one nearly empty extra site), written elsewhere (default mini)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="make the sites in this many processes (the same files; default 1)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.confounded and args.out.resolve() == BUNDLED:
        raise InputError(
            f"--out {args.out}: the bundled dataset is the clean variant; "
            "write the confounded one to another folder"
        )
    if args.geometry != "mini" and args.out.resolve() == BUNDLED:
        raise InputError(
            f"--out {args.out}: the bundled dataset is the mini geometry; "
            f"write the {args.geometry} one to another folder"
        )
    params, layout = GEOMETRIES[args.geometry]
    sheet = write_dataset(
        args.out,
        seed=args.seed,
        confounded=args.confounded,
        params=params,
        layout=layout,
        progress=True,
        workers=args.workers,
    )
    counts = sheet.drop_duplicates(["plate", "well"]).groupby("treatment").size()
    print(
        f"wrote {len(sheet)} sites ({', '.join(f'{t}: {n} wells' for t, n in counts.items())}) "
        f"to {args.out / 'samples.tsv'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
