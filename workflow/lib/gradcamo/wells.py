"""Well names: one spelling per well, whatever the instrument or sheet wrote."""

from __future__ import annotations

import re

_WELL = re.compile(r"^([A-Za-z]{1,2})0*([0-9]{1,2})$")


def canonical_well(name: str) -> str:
    """One spelling per well: row letters upper-case, column zero-padded to two digits
    (``b4``, ``B4`` and ``B004`` are ``B04``; ``AA1`` is ``AA01``). Names that are not
    row-and-column positions are kept as they are."""
    match = _WELL.match(name)
    return f"{match.group(1).upper()}{int(match.group(2)):02d}" if match else name


def row_letters(row: int) -> str:
    """Plate row ``row`` (1-based) as letters: 1 -> A, 26 -> Z, 27 -> AA (1536-well plates)."""
    if row < 1:
        raise ValueError(f"row must be 1 or more, got {row}")
    letters = ""
    while row:
        row, rest = divmod(row - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def well_name(row: int, column: int) -> str:
    """The well at 1-based ``row`` and ``column``: ``well_name(2, 3) == "B03"``."""
    return f"{row_letters(row)}{column:02d}"
