"""`milestones.toml` -> a frozen `Config` (SPEC §1).

Read with the standard library's `tomllib`; every key is checked so that a typo is an error that
names the key rather than a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import ConfigError

RETURN_MODES = ("original", "carry", "ignore")
OUTPUT_FORMATS = ("csv", "parquet", "jsonl")


@dataclass(frozen=True)
class Config:
    """Organisation-wide settings; the defaults are SPEC §1's."""

    timezone: str = "UTC"
    leaderboards_enabled: bool = False
    returns_mode: str = "original"
    track_from_enrolment: bool = False
    output_dir: Path = field(default_factory=lambda: Path("rewards"))
    output_format: str = "csv"
    source: Path | None = None  # the file it was read from, for messages


# section -> key -> (attribute, type check, allowed values or None)
_KEYS: dict[str, dict[str, tuple[str, type, tuple[str, ...] | None]]] = {
    "org": {
        "timezone": ("timezone", str, None),
        "leaderboards_enabled": ("leaderboards_enabled", bool, None),
    },
    "returns": {"mode": ("returns_mode", str, RETURN_MODES)},
    "enrolment": {"track_from_enrolment": ("track_from_enrolment", bool, None)},
    "output": {
        "dir": ("output_dir", str, None),
        "format": ("output_format", str, OUTPUT_FORMATS),
    },
}


def load_config(path: Path | None, *, required: bool = False) -> Config:
    """Read `path` (if it exists) into a `Config`.

    Args:
        path: the TOML file; a missing file gives the defaults unless `required`.
        required: the user named the file with ``--config``, so it must exist.

    Raises:
        ConfigError: unreadable or malformed file, unknown section or key, bad value.
    """
    if path is None or not path.exists():
        if required:
            raise ConfigError(f"config file {path} does not exist; check the --config path")
        return Config()
    if path.is_dir():
        raise ConfigError(f"config path {path} is a directory; give the milestones.toml file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc

    values: dict[str, object] = {"source": path}
    for section, body in raw.items():
        if section not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: `{section}` must be a table like [{section}]")
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if key not in _KEYS[section]:
                known = ", ".join(f"{section}.{k}" for k in _KEYS[section])
                raise ConfigError(f"{path}: unknown key `{dotted}` (known: {known})")
            attr, kind, allowed = _KEYS[section][key]
            if not isinstance(value, kind):
                raise ConfigError(f"{path}: `{dotted}` must be a {kind.__name__}, got {value!r}")
            if allowed is not None and value not in allowed:
                raise ConfigError(
                    f"{path}: `{dotted}` = {value!r} is not one of {', '.join(allowed)}"
                )
            values[attr] = value
    tz = values.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"{path}: `org.timezone` = {tz!r} is not an IANA zone such as 'Europe/Paris'"
        ) from exc
    if "output_dir" in values:
        out = Path(str(values["output_dir"]))
        values["output_dir"] = out if out.is_absolute() else (path.parent / out).resolve()
    return Config(**values)  # type: ignore[arg-type]
