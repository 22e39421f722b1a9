"""The workflow's configuration outside Snakemake (the sheet builder, studies, benchmarks):
read, validated against ``workflow/schemas/config.schema.yaml`` and completed with its
defaults, the one place defaults live. (Inside the workflow, ``common.smk`` does the same
through ``snakemake.utils.validate``.)"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from gradcamo.errors import InputError

#: The configuration's JSON schema, beside the library in the workflow's source.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class):
    """A validator that fills in each property's ``default`` as it validates (the recipe of
    jsonschema's FAQ; jsonschema itself only validates)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def complete_config(config: Mapping[str, Any]) -> dict:
    """``config`` validated against the schema, with every default filled in.

    Raises
    ------
    InputError: naming the key that fails the schema.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    completed = yaml.safe_load(yaml.safe_dump(dict(config)))  # a deep copy, plain types
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(completed))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"config key {where!r}: {error.message}")
    return completed


def load_config(path: str | Path) -> dict:
    """A configuration file, validated and completed (:func:`complete_config`)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: configuration file does not exist") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    return complete_config(config)
