"""Per-plane files of any other naming, matched by a glob and a regular expression with named
groups (``images.pattern``): ``well``, ``channel``, and optionally ``plate`` (default: the
folder's name), ``site`` (default 1) and ``plane`` (default 1), matched against each file's
path relative to the folder the sheet's ``image`` names."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from gradcamo.errors import InputError
from gradcamo.readers.planes import PlaneTable, plane_frame
from gradcamo.wells import canonical_well

REQUIRED_GROUPS = ("well", "channel")
OPTIONAL_GROUPS = ("plate", "site", "plane")


def compile_pattern(pattern: Mapping[str, str]) -> tuple[str, re.Pattern]:
    """The glob and the compiled regex of ``images.pattern``, its groups checked."""
    glob, regex = pattern.get("glob"), pattern.get("regex")
    if not glob or not regex:
        raise InputError("config key 'images.pattern' needs 'glob' and 'regex' for layout 'pattern'")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise InputError(f"config key 'images.pattern.regex' is not a regular expression: {exc}") from None
    groups = set(compiled.groupindex)
    missing = [g for g in REQUIRED_GROUPS if g not in groups]
    unknown = sorted(groups - set(REQUIRED_GROUPS) - set(OPTIONAL_GROUPS))
    if missing or unknown:
        raise InputError(
            f"config key 'images.pattern.regex' {regex!r}: "
            + (f"lacks named group(s) {missing} " if missing else "")
            + (f"has unknown group(s) {unknown} " if unknown else "")
            + f"(groups: {', '.join(REQUIRED_GROUPS)}, optionally {', '.join(OPTIONAL_GROUPS)})"
        )
    return glob, compiled


def pattern_planes(source: str | os.PathLike, pattern: Mapping[str, str]) -> PlaneTable:
    """Every file under ``source`` that the glob and the regex match (:class:`PlaneTable`).

    Raises
    ------
    InputError: the folder does not exist, the glob matches nothing, or the regex matches
        none of the globbed files (the message shows one of them).
    """
    folder = Path(source)
    glob, regex = compile_pattern(pattern)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder does not exist (layout 'pattern' reads a folder of planes)")
    files = sorted(p for p in folder.glob(glob) if p.is_file())
    if not files:
        raise InputError(f"{folder}: config key 'images.pattern.glob' {glob!r} matches no file here")
    rows, channels = [], []
    for path in files:
        match = regex.search(path.relative_to(folder).as_posix())
        if not match:
            continue
        found = match.groupdict()
        if found["channel"] not in channels:
            channels.append(found["channel"])
        rows.append(
            {
                "plate": found.get("plate") or folder.name,
                "well": canonical_well(found["well"]),
                "site": int(found.get("site") or 1),
                "plane": int(found.get("plane") or 1),
                "channel": found["channel"],
                "path": str(path),
                "frame": 0,
                "z": float("nan"),
            }
        )
    if not rows:
        raise InputError(
            f"{folder}: config key 'images.pattern.regex' {regex.pattern!r} matches none of the "
            f"{len(files)} file(s) the glob finds, e.g. {files[0].relative_to(folder).as_posix()!r}"
        )
    return PlaneTable(plane_frame(rows), str(folder), None, channels)
