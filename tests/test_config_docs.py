"""The schema is the one home of every default: config/README.md's table says the same."""

from __future__ import annotations

import re

import yaml
from conftest import REPO

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
# Objects whose keys are documented as one value (their default is a mapping).
AS_ONE_VALUE = {"split.fractions"}


def schema_defaults(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, spec in node.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if spec.get("type") == "object" and "properties" in spec and dotted not in AS_ONE_VALUE:
            out.update(schema_defaults(spec, dotted + "."))
        else:
            out[dotted] = spec.get("default", "<no default>")
    return out


def readme_defaults() -> dict:
    rows = {}
    for line in (REPO / "config" / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([A-Za-z0-9_.]+)` \| `(.*?)` \|", line)
        if match:
            rows[match.group(1)] = yaml.safe_load(match.group(2))
    return rows


def test_every_key_has_a_schema_default():
    missing = [k for k, v in schema_defaults(SCHEMA).items() if v == "<no default>"]
    assert not missing, missing


def test_the_config_readme_table_is_the_schema():
    schema, readme = schema_defaults(SCHEMA), readme_defaults()
    assert sorted(schema) == sorted(readme), set(schema) ^ set(readme)
    differ = {k: (schema[k], readme[k]) for k in schema if schema[k] != readme[k]}
    assert not differ, differ
