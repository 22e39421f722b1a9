"""What a release needs, read from the files: one version everywhere, the library's manifest
(a module from a git tag copies exactly these files), the catalog's metadata, and old
configuration keys refused with their new names."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from conftest import REPO, mini_sheet_rows, run_snakemake, write_project
from gradcamo import __version__
from gradcamo.config import RENAMED_KEYS, complete_config
from gradcamo.errors import InputError


def test_one_version_everywhere():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    changelog = re.search(r"^## (\S+) \(", (REPO / "CHANGELOG.md").read_text(), flags=re.M).group(1)
    assert pyproject["version"] == __version__ == citation["version"] == changelog
    assert pyproject["license"]["text"] == "MIT" and "MIT License" in (REPO / "LICENSE").read_text()


def test_the_library_manifest_lists_every_module():
    """Used as a module from a git source, the workflow copies lib/MANIFEST's files out of it
    (workflow/rules/common.smk): a module missing there would fail on import in every job."""
    listed = (REPO / "workflow" / "lib" / "MANIFEST").read_text().split()
    found = sorted(
        str(p.relative_to(REPO / "workflow" / "lib"))
        for p in (REPO / "workflow" / "lib" / "gradcamo").rglob("*.py")
    )
    assert listed == found, set(listed) ^ set(found)


def test_the_catalog_metadata():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert (
        catalog["usage"]["software-stack-deployment"]["conda"] is True and catalog["usage"]["report"] is True
    )
    assert (REPO / "workflow" / "Snakefile").is_file() and not (REPO / "Snakefile").exists()
    assert sorted(p.name for p in (REPO / "workflow" / "envs").glob("*.yaml")) == [
        "analysis.yaml",
        "segmentation.yaml",
        "snakemake.yaml",
        "torch.yaml",
    ]


@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_an_old_key_names_its_new_one(old):
    config: dict = {}
    node = config
    *parents, leaf = old.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = 1
    with pytest.raises(
        InputError, match=rf"config key '{re.escape(old)}' is now '{re.escape(RENAMED_KEYS[old])}'"
    ):
        complete_config(config)


def test_an_old_key_stops_the_workflow_by_name(tmp_path):
    project = write_project(tmp_path, mini_sheet_rows(), {"profile.cam_method": "gradcam"})
    proc = run_snakemake(project, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert (
        proc.returncode != 0 and "config key 'profile.cam_method' is now 'profile.attribution_method'" in out
    )
