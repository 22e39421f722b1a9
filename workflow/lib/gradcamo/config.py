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


#: Keys renamed or moved before the first release: old dotted key -> its new home. An old key
#: in a configuration is an error naming the new one (never silently ignored or taken).
RENAMED_KEYS = {
    "profile.cam_method": "profile.attribution_method",
    "profile.save_cams": "profile.save_attributions",
    **{
        f"segmentation.{k}": f"resources.segment.{k} (and resources.train_segmentation.{k})"
        for k in ("gpu", "threads", "mem_mb")
    },
    "segmentation.runtime": "resources.segment.runtime",
    "segmentation.train.runtime": "resources.train_segmentation.runtime",
    **{f"train.{k}": f"resources.train.{k}" for k in ("gpu", "threads", "mem_mb", "runtime")},
    **{f"profile.{k}": f"resources.profile.{k}" for k in ("gpu", "threads", "mem_mb", "runtime")},
}


def check_renamed_keys(config: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` naming the new key of the first renamed key ``config`` uses."""
    for old, new in RENAMED_KEYS.items():
        node = config
        for part in old.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            raise InputError(f"config key {old!r} is now {new!r}: rename it in your config")


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
    InputError: naming the key that fails the schema, or a renamed key and its new name.
    """
    check_renamed_keys(config)
    return complete_with_schema(config, yaml.safe_load(SCHEMA_PATH.read_text()))


def complete_with_schema(config: Mapping[str, Any], schema: Mapping[str, Any], what: str = "config") -> dict:
    """A deep copy of ``config`` validated against ``schema`` (a JSON schema), with every
    default filled in (the studies' configuration uses it with its own schema).

    Raises
    ------
    InputError: ``<what> key 'a.b': <why>``, naming the first key that fails.
    """
    completed = yaml.safe_load(yaml.safe_dump(dict(config)))  # a deep copy, plain types
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(completed))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"{what} key {where!r}: {error.message}")
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
