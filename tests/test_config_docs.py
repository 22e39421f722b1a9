"""The schema is the one home of every default: config/README.md's tables say the same, the
screen template (config/config.yaml) is the schema's defaults, and the mini dataset's config
(.test/config/config.yaml) states only what it changes."""

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
        if prefix == "resources.":  # one row per rule: its threads, memory, runtime (and GPUs)
            out[dotted] = {
                field: sub.get("default", "<no default>") for field, sub in spec["properties"].items()
            }
        elif spec.get("type") == "object" and "properties" in spec and dotted not in AS_ONE_VALUE:
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
    missing = [
        k for k, v in schema_defaults(SCHEMA).items() if v == "<no default>" or "<no default>" in str(v)
    ]
    assert not missing, missing


def flatten(config: dict, schema: dict = SCHEMA, prefix: str = "") -> dict:
    """Dotted keys of a config file, with the same one-value keys as :func:`schema_defaults`
    (a mapping the schema gives no properties, such as ``images.channel_names``, is one value)."""
    out = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        spec = schema.get("properties", {}).get(key, {})
        if (
            isinstance(value, dict)
            and "properties" in spec
            and dotted not in AS_ONE_VALUE
            and prefix != "resources."
        ):
            out.update(flatten(value, spec, dotted + "."))
        else:
            out[dotted] = value
    return out


def test_the_screen_template_is_the_schema_defaults():
    """config/config.yaml lists every key with the schema's default: a user who trims it to
    its EDIT keys runs the same screen (no mini-sized default hides behind a missing key)."""
    schema = schema_defaults(SCHEMA)
    template = flatten(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    assert sorted(template) == sorted(schema), set(template) ^ set(schema)
    differ = {k: (template[k], schema[k]) for k in schema if template[k] != schema[k]}
    assert not differ, differ


def test_the_mini_config_states_only_what_the_mini_dataset_changes():
    schema = schema_defaults(SCHEMA)
    mini = flatten(yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text()))
    unknown = [k for k in mini if k not in schema]
    assert not unknown, unknown
    same = []
    for key, value in mini.items():
        default = schema[key]
        if isinstance(value, dict) and isinstance(default, dict):  # a rule's resources, in part
            same += [f"{key}.{f}" for f, v in value.items() if default.get(f) == v]
        elif value == default and key != "samples":
            same.append(key)
    assert not same, f".test/config/config.yaml repeats schema defaults: {same}"


def test_the_config_readme_table_is_the_schema():
    schema, readme = schema_defaults(SCHEMA), readme_defaults()
    assert sorted(schema) == sorted(readme), set(schema) ^ set(readme)
    differ = {k: (schema[k], readme[k]) for k in schema if schema[k] != readme[k]}
    assert not differ, differ
