"""Presets: named sets of option values, applied as defaults under the user's flags.

A preset sets each option it names; a flag the user gave with another value than the option's
default and the preset's is a contradiction, refused (never silently overridden)."""

from __future__ import annotations

from dataclasses import MISSING, fields

from atlas.errors import AtlasError

# --preset reference: everything the released code does (README, "Fidelity to the released code").
PRESETS = {
    "reference": {"shots": 5, "examples": None, "split": "file", "max_tokens": 1300,
                  "demos_include_query": True, "join_outputs": True, "prompt_rule": "reference",
                  "metric": "reference_em", "demos": "per_query", "released_data": True,
                  "max_instances": 6500},
}
# The dtype the released code scores in (the CLI's --dtype auto under --preset reference).
PRESET_DTYPE = {"reference": "bfloat16"}


def apply_preset(options, name: str) -> None:
    """Set every option that preset ``name`` fixes on ``options`` (an IngestOptions or
    AblateOptions dataclass); an option the user set to something else is an error."""
    if name not in PRESETS:
        raise AtlasError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    defaults = {f.name: f.default for f in fields(options) if f.default is not MISSING}
    for key, value in PRESETS[name].items():
        if not hasattr(options, key):
            continue
        given = getattr(options, key)
        if key in defaults and given != defaults[key] and given != value:
            flag = "--" + key.replace("_", "-")
            raise AtlasError(f"{flag} {given} contradicts --preset {name}, which sets it to "
                             f"{value}; leave {flag} out or drop the preset")
        setattr(options, key, value)
