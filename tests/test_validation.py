"""Bad config and sample sheets fail at parse time (`snakemake -n`), naming file, line and field."""

from __future__ import annotations

import pytest
from conftest import _DELETE, run_snakemake, write_project


def _dry_run_error(tmp_path, rows, edits):
    write_project(tmp_path, rows, edits)
    proc = run_snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0, "the dry run should have failed"
    assert not (tmp_path / "results").exists(), "no job may run on bad input"
    return proc.stdout + proc.stderr


def _duplicate(rows):
    rows.append(dict(rows[0]))
    return rows


def _missing_image(rows):
    rows[2]["image"] = rows[2]["image"].replace("c.tif", "nope.tif")
    return rows


def _treatment_mismatch(rows):
    rows[1]["treatment"] = "X"
    return rows


def _one_treatment(rows):
    for r in rows:
        r["treatment"] = "DMSO"
    return rows


def _bad_site(rows):
    rows[3]["site"] = "two"
    return rows


def _bad_well(rows):
    rows[1]["well"] = "well 2"
    return rows


def _unknown_column(rows):
    for r in rows:
        r["treatmnt"] = r["treatment"]
    return rows


@pytest.mark.parametrize(
    "mutate, edits, expected",
    [
        (_duplicate, {}, ["samples.tsv line 6", "duplicate row", "P1", "B02", "site 1", "first at line 2"]),
        (_missing_image, {}, ["samples.tsv line 4", "'image'", "nope.tif", "does not exist"]),
        (_treatment_mismatch, {}, ["P1/B02", "disagree", "'treatment'", "line 2: DMSO", "line 3: X"]),
        (_one_treatment, {"aggregate.control": "DMSO"}, ["samples.tsv", "'treatment'", "only one value"]),
        (_bad_site, {}, ["samples.tsv line 5", "'site'", "'two'"]),
        (_bad_well, {}, ["samples.tsv line 3", "'well'", "well 2"]),
        (_unknown_column, {}, ["samples.tsv", "unknown column", "'treatmnt'", "did you mean 'treatment'"]),
        (
            None,
            {"segmentation.nucleus_channel": "Hoechst"},
            ["segmentation.nucleus_channel", "Hoechst", "not in 'channels'"],
        ),
        (None, {"aggregate.control": "PBS"}, ["aggregate.control", "PBS", "no well has that treatment"]),
        (None, {"train.epocs": 3}, ["'train.epocs' is not known", "did you mean 'train.epochs'"]),
        (None, {"cropz": {"shape": [8, 16, 16]}}, ["'cropz' is not known", "did you mean 'crops'"]),
        (None, {"crops.shape": [8, 16]}, ["config key 'crops.shape'", "too short"]),
        (None, {"split.fractions": {"train": 0.5, "val": 0.5, "test": 0.5}}, ["split.fractions", "sum to 1"]),
        (
            None,
            {"segmentation.train.sites": ["P9/B02/1"]},
            ["segmentation.train.sites", "P9/B02/1", "not in the sample sheet"],
        ),
    ],
    ids=[
        "duplicate-row",
        "missing-image",
        "treatment-mismatch",
        "one-treatment",
        "site-not-integer",
        "bad-well-name",
        "unknown-column",
        "segmentation-channel",
        "unknown-control",
        "misspelt-key",
        "misspelt-section",
        "crop-shape-type",
        "fractions-sum",
        "unknown-training-site",
    ],
)
def test_bad_input_fails_at_parse_time(tmp_path, tiny_sheet, tiny_config, mutate, edits, expected):
    rows = mutate(tiny_sheet) if mutate else tiny_sheet
    message = _dry_run_error(tmp_path, rows, {**tiny_config, **edits})
    for fragment in expected:
        assert fragment in message, f"{fragment!r} missing from:\n{message[-3000:]}"


def test_missing_training_labels_named(tmp_path, tiny_sheet, tiny_config):
    for r in tiny_sheet:
        r.pop("labels")
    message = _dry_run_error(tmp_path, tiny_sheet, tiny_config)
    assert "segmentation.train.sites" in message and "has no 'labels'" in message


def test_valid_tiny_project_dry_runs(tmp_path, tiny_sheet, tiny_config):
    write_project(tmp_path, tiny_sheet, tiny_config)
    proc = run_snakemake(tmp_path, "-n")
    assert "qc_well" in proc.stdout


def test_defaults_fill_omitted_keys(tmp_path, tiny_sheet, tiny_config):
    """A config that leaves out optional sections still validates (schema defaults)."""
    write_project(tmp_path, tiny_sheet, {**tiny_config, "qc": _DELETE, "profile": _DELETE})
    run_snakemake(tmp_path, "-n")
