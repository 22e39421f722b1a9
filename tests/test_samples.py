"""The sample-sheet reader and its semantic checks, on small sheets."""

from __future__ import annotations

import pandas as pd
import pytest
from gradcamo.errors import InputError
from gradcamo.samples import check_sample_sheet, read_sample_sheet, wells_table


def _write(tmp_path, rows):
    path = tmp_path / "samples.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_relative_paths_resolve_against_the_sheet(tmp_path, tiny_images, tiny_sheet):
    (tmp_path / "data").mkdir()
    for r in tiny_sheet:
        name = r["image"].rsplit("/", 1)[1]
        (tmp_path / "data" / name).write_bytes(open(r["image"], "rb").read())
        r["image"] = f"data/{name}"
        r.pop("labels")
    sheet = read_sample_sheet(_write(tmp_path, tiny_sheet))
    assert all(p.startswith(str(tmp_path / "data")) for p in sheet.image)
    assert sheet.site.dtype.kind == "i" and sheet.control.dtype == bool
    assert sheet.labels.isna().all()
    check_sample_sheet(sheet, "samples.tsv")
    wells = wells_table(sheet)
    assert list(wells.columns) == ["plate", "well", "treatment", "control", "n_sites"]
    assert wells.n_sites.tolist() == [2, 2]


def test_missing_column_named(tmp_path, tiny_sheet):
    for r in tiny_sheet:
        r.pop("treatment")
    with pytest.raises(InputError, match="missing column.*treatment"):
        read_sample_sheet(_write(tmp_path, tiny_sheet))


def test_control_must_be_boolean(tmp_path, tiny_sheet):
    tiny_sheet[2]["control"] = "maybe"
    with pytest.raises(InputError, match="line 4.*'control'.*maybe"):
        read_sample_sheet(_write(tmp_path, tiny_sheet))


def test_missing_labels_file_named(tmp_path, tiny_sheet):
    tiny_sheet[0]["labels"] = str(tmp_path / "gone.tif")
    sheet = read_sample_sheet(_write(tmp_path, tiny_sheet))
    with pytest.raises(InputError, match="line 2: field 'labels'.*gone.tif does not exist"):
        check_sample_sheet(sheet, "samples.tsv")
