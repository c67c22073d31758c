"""Hydra override strings read with Hydra's own parser: the one place that knows their grammar.

``+key=v``, ``++key=v``, ``~key``, ``group@pkg=v``, quoted values and sweeps (``a=1,2``) all
parse the way Hydra itself will apply them, so code that asks "does this job set data.root?"
never disagrees with the run that follows.
"""

from __future__ import annotations

from collections.abc import Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from skuvision.errors import ConfigError


def parse(overrides: Iterable[str]) -> list:
    """Hydra ``Override`` objects; a malformed string is one ConfigError naming it."""
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([str(text)]))
        except OverrideParseException as exc:
            raise ConfigError(f"override {text!r}: {str(exc).splitlines()[0]}") from None
    return parsed


def key(override) -> str:
    """The key or group an override sets (``+``/``++``/``~`` dropped, ``@package`` kept off)."""
    return str(override.key_or_group)


def as_dict(overrides: Iterable[str]) -> dict[str, str]:
    """``{key: value as written}``; deletions (``~key``) map to an empty string."""
    return {key(o): o.input_line.partition("=")[2] for o in parse(overrides)}


def sets(overrides: Iterable[str], name: str) -> str | None:
    """The first override (as written) whose key is ``name``, else None."""
    return next((o.input_line for o in parse(overrides) if key(o) == name), None)
