"""Conda envs cannot be built here (no conda channels), so they are kept correct by reading them.

Every rule names an env that exists; every third-party import of the script a rule runs
(and of the gradcamo modules it imports, transitively) is declared in that env; every env
pin agrees with requirements.txt, the pins of the local virtual environment.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

RULES = REPO / "workflow" / "rules"
STUDY_RULES = REPO / "workflow" / "studies" / "rules"  # the validation studies' workflow
LIB = REPO / "workflow" / "lib"
# import name -> package name on conda-forge / PyPI
PACKAGE_OF = {
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "umap": "umap-learn",
    "torch": "pytorch",
    "yaml": "pyyaml",
    "ome_zarr": "ome-zarr",
}
NOT_PACKAGES = {"snakemake", "gradcamo"}  # injected by Snakemake / on PYTHONPATH


def _rules() -> dict[str, dict]:
    rules = {}
    for smk in sorted(RULES.glob("*.smk")) + sorted(STUDY_RULES.glob("*.smk")):
        text = smk.read_text()
        blocks = re.split(r"^rule (\w+):", text, flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2]):
            found = {}
            for key in ("conda", "script"):
                m = re.search(rf"^\s+{key}:\s*\n\s+\"([^\"]+)\"", body, flags=re.M)
                found[key] = (smk.parent / m.group(1)).resolve() if m else None
            rules[name] = {"file": smk, **found}
    return rules


def _imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level names of third-party modules imported by ``path`` and its gradcamo imports."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top == "gradcamo":
                target = LIB.joinpath(*module.split("."))
                for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                    if candidate.exists():
                        names |= _imports(candidate, seen)
            elif top not in sys.stdlib_module_names and top not in NOT_PACKAGES:
                names.add(top)
    return names


def _env_packages(env: Path) -> dict[str, str | None]:
    spec = yaml.safe_load(env.read_text())
    pins: dict[str, str | None] = {}
    for dep in spec["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            m = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:==?\s*([^\s,;]+))?", entry)
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[PACKAGE_OF.get(m.group(1).lower(), m.group(1).lower())] = m.group(2)
    return pins


ALL_RULES = _rules()


def test_rules_found():
    expected = {"qc_well", "qc_plate", "segment", "crops", "split", "train", "profile"}
    assert expected <= set(ALL_RULES), f"missing rules: {expected - set(ALL_RULES)}"


@pytest.mark.parametrize("rule", sorted(r for r in ALL_RULES if r != "all"))
def test_rule_env_declares_script_imports(rule):
    info = ALL_RULES[rule]
    assert info["conda"] is not None, f"rule {rule} ({info['file'].name}) has no conda env"
    assert info["conda"].exists(), f"rule {rule}: env {info['conda']} does not exist"
    assert info["script"] is not None and info["script"].exists(), f"rule {rule}: no script"
    declared = set(_env_packages(info["conda"]))
    needed = {PACKAGE_OF.get(name, name).lower() for name in _imports(info["script"])}
    if "pandas" in needed:
        needed.add("pyarrow")  # Parquet I/O goes through pyarrow without an import
    missing = needed - declared
    assert not missing, f"rule {rule}: {info['conda'].name} lacks {sorted(missing)}"


@pytest.mark.parametrize("env", sorted((REPO / "workflow" / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_agree_with_requirements(env):
    spec = yaml.safe_load(env.read_text())
    assert "conda-forge" in spec["channels"]
    requirements = _requirements()
    for name, version in _env_packages(env).items():
        if name in {"python", "pip"}:
            continue
        assert version, f"{env.name}: {name} is not pinned"
        if name in requirements:
            assert version == requirements[name], (
                f"{env.name}: {name} {version} but requirements.txt pins {requirements[name]}"
            )


def test_every_env_is_used():
    used = {info["conda"] for info in ALL_RULES.values() if info["conda"]}
    for env in (REPO / "workflow" / "envs").glob("*.yaml"):
        assert env.resolve() in used, f"{env.name} is used by no rule"


def _schema_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, sub in node.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub and key != "fractions":
            keys += _schema_keys(sub, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def test_every_config_key_is_documented_and_has_a_default():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    doc = (REPO / "config" / "README.md").read_text()
    keys = _schema_keys(schema)
    assert len(keys) > 40
    for key in keys:
        documented = key if not key.startswith("resources.") else ".".join(key.split(".")[:2])
        assert f"| `{documented}` |" in doc, f"config/README.md does not document {key}"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key in keys:  # the template lists every key (the mini config only what it changes)
        node = config
        for part in key.split("."):
            assert part in node, f"config/config.yaml lacks {key}"
            node = node[part]
