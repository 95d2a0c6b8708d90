"""Settings errors as one line a person can act on: which setting (`[group] key`), where it came
from (a flag, an environment variable, the config file) and what is wrong; no pydantic dump.

`chinwag serve` and `chinwag models` print this for a ConfigError raised by load_settings.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from server.config import ConfigError, Settings, _env_layer


def settings_problem(
    exc: ConfigError,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> str:
    """What load_settings(config_path, overrides, environ) refused, in one line."""
    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        return " ".join(str(exc).split())
    environ = dict(os.environ) if environ is None else environ
    if config_path is None and environ.get("CHINWAG_CONFIG"):
        config_path = Path(environ["CHINWAG_CONFIG"])
    layers: list[tuple[str, dict[str, Any]]] = [("the command line", overrides or {})]
    with contextlib.suppress(ConfigError):
        layers.append(("the environment", _env_layer(environ)))
    if config_path is not None:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            layers.append((str(config_path), tomllib.loads(config_path.read_text("utf-8"))))
    return describe_settings_error(cause, layers)


def describe_settings_error(
    exc: ValidationError, layers: list[tuple[str, dict[str, Any]]] | None = None
) -> str:
    """One line naming each bad setting, where it came from and what is wrong with it:
    "[server] prot (CHINWAG_SERVER__PROT): unknown setting; known: allowed_origins, host, ..."."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        group, key = (loc[0], ".".join(loc[1:])) if loc else ("", "")
        name = f"[{group}] {key}" if key else f"[{group}]"
        source = _source_of(loc[:2], layers or [])
        where = f" ({source})" if source else ""
        if error["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            parts.append(
                f"{name}{where}: unknown {'setting' if key else 'section'}; known: {known}"
            )
        elif error["type"] == "missing":
            parts.append(f"{name}{where}: required")
        else:
            value = error.get("input")
            shown = f" = {value!r}" if isinstance(value, str | int | float | bool) else ""
            parts.append(f"{name}{shown}{where}: {error['msg']}")
    return "; ".join(parts)


def _source_of(loc: list[str], layers: list[tuple[str, dict[str, Any]]]) -> str | None:
    """Which layer set `loc` (the highest one that has it), as the user would name it."""
    for label, layer in layers:
        value: Any = layer
        for part in loc:
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            if label == "the environment":
                if len(loc) == 1 and isinstance(value, dict) and value:
                    loc = [*loc, next(iter(value))]  # an unknown section: its first variable
                return "CHINWAG_" + "__".join(p.upper() for p in loc)
            return f"from {label}"
    return None


def _known_keys(loc: list[str]) -> str:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return "?"
        model = annotation
    return ", ".join(sorted(model.model_fields))
