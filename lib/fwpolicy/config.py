"""Configuration as data: frozen dataclasses, validated on construction, loaded from YAML.

``conf/default.yaml`` documents every field. The command line overrides a few of them (profile,
ephemeral range start, inbound remote IPs); the window and paths live in ``RunSpec``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fwpolicy.aliasing import PROFILES

SOURCE_FORMATS = ("delta", "parquet")
JOIN_STRATEGIES = ("auto", "broadcast", "shuffle")
DISTINCT_MODES = ("exact", "approx")


class ConfigError(ValueError):
    """A configuration value or file that fwpolicy cannot use; the message names it."""


@dataclass(frozen=True)
class PolicyConfig:
    """What the query computes. Defaults reproduce the seed KQL query exactly."""

    profile: str = "kql"
    ephemeral_start: int = 49152
    include_inbound_remote_ips: bool = False
    set_cap: int = 128  # KQL makeset() keeps at most 128 values
    distinct_machines: str = "exact"  # KQL dcount() is an estimate; exact is the default here
    server_keys_join: str = "auto"  # auto: broadcast when small (AQE), else a shuffle join
    partition_columns: tuple[str, ...] = ("EventDate",)  # date partitions to prune, if present
    exclusions: str | None = None  # benign-traffic rules file (conf/exclusions.yaml); none by default
    aliases: str | None = None  # alias rules of profile normalized; None: conf/aliases.yaml
    ephemeral_start_linux: int = 32768  # profile normalized: per-OS ephemeral ranges
    ephemeral_start_macos: int = 49152
    hunting: Any = None  # HuntingSettings, or a mapping of its fields (see fwpolicy.hunting)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        for name in ("ephemeral_start", "ephemeral_start_linux", "ephemeral_start_macos"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65536):
                raise ConfigError(f"{name} must be an integer in 1..65536, got {value!r}")
        if not isinstance(self.include_inbound_remote_ips, bool):
            raise ConfigError("include_inbound_remote_ips must be true or false")
        if not (isinstance(self.set_cap, int) and self.set_cap >= 1):
            raise ConfigError(f"set_cap must be a positive integer, got {self.set_cap!r}")
        if self.distinct_machines not in DISTINCT_MODES:
            raise ConfigError(f"distinct_machines must be one of {DISTINCT_MODES}")
        if self.server_keys_join not in JOIN_STRATEGIES:
            raise ConfigError(f"server_keys_join must be one of {JOIN_STRATEGIES}")
        for name in ("exclusions", "aliases"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a file path, got {value!r}")
        object.__setattr__(self, "partition_columns", tuple(self.partition_columns))
        from fwpolicy.hunting import HuntingSettings  # hunting imports config: import late

        if not isinstance(self.hunting, HuntingSettings):
            try:
                object.__setattr__(self, "hunting", HuntingSettings.from_mapping(self.hunting))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"hunting: {e}") from e

    def digest(self) -> str:
        """A short stable hash of the settings, recorded with each run's output."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """Where to read, where to write, and the window ``[start, end)`` on ``Timestamp``."""

    source: str
    source_format: str
    output: str
    start: dt.date
    end: dt.date
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if self.source_format not in SOURCE_FORMATS:
            raise ConfigError(f"source format must be one of {SOURCE_FORMATS}, got {self.source_format!r}")
        if self.end <= self.start:
            raise ConfigError(f"empty window: end {self.end} must be after start {self.start}")


def load_policy_config(path: str | Path | None = None, **overrides: Any) -> PolicyConfig:
    """Read a YAML config file (or the defaults) and apply non-None overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of settings at the top level")
        known = {f.name for f in dataclasses.fields(PolicyConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ConfigError(f"{p}: unknown setting(s) {unknown}; known: {sorted(known)}")
        for name in ("exclusions", "aliases"):
            if isinstance(loaded.get(name), str):
                # A relative rules path in a settings file is relative to that file.
                loaded[name] = str((p.parent / loaded[name]).resolve())
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return PolicyConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from e
