"""Configuration as data: frozen dataclasses, validated on construction, loaded from YAML.

``conf/default.yaml`` documents every field. The command line overrides a few of them (profile,
ephemeral range start, inbound remote IPs); the window and paths live in ``RunSpec``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("kql", "normalized")  # alias profiles (fwpolicy.query.aliasing)
SOURCE_FORMATS = ("delta", "parquet")
JOIN_STRATEGIES = ("auto", "broadcast", "shuffle")
DISTINCT_MODES = ("exact", "approx")


def stable_digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (keys sorted; other objects as ``str``): what a
    run records of its settings, and what tells the nightly whether a stored block still holds."""
    blob = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A configuration value or file that fwpolicy cannot use; the message names it."""


# ------------------------------------------------------------------ hunting settings

# Reason -> (default weight, what it means). Order here is the order of the docs' table.
REASONS: dict[str, tuple[int, str]] = {
    "recycle_bin": (4, "a raw path is in a recycle bin"),
    "downloads_or_temp": (3, "a raw path is in a Downloads or temp folder"),
    "hidden_unix_dir": (3, "a raw Unix path has a folder or file name starting with '.'"),
    "programdata_root": (3, "a raw path is a file directly in <drive>:\\programdata\\"),
    "public_folder": (3, "a raw path is under \\users\\public\\ or /users/shared/"),
    "public_nonstandard_port": (3, "outbound to a public address on a port not in standard_ports"),
    "system_folder_outlier": (
        3,
        "in a system folder, on <= outlier_share ({outlier_share}) of its folder's median",
    ),
    "low_prevalence": (
        2,
        "on at most rare_share ({rare_share}) of the machines of its OS family (at least 1, not all)",
    ),
    "user_writable_path": (1, "a raw path is under a user's profile"),
    "recently_first_seen": (1, "first seen in the last recent_days ({recent_days}) days of a longer window"),
}
PATH_REASONS = (
    "user_writable_path",
    "downloads_or_temp",
    "public_folder",
    "programdata_root",
    "recycle_bin",
    "hidden_unix_dir",
)
DEFAULT_WEIGHTS = {name: weight for name, (weight, _) in REASONS.items()}
DEFAULT_STANDARD_PORTS = (22, 25, 53, 80, 123, 443, 465, 587, 993, 995, 3389, 5223, 8080, 8443)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_mapping(cls: Any, section: str, values: Mapping[str, Any] | None) -> Any:
    """``cls(**values)`` for a settings section of a YAML file; unknown keys are errors."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class HuntingSettings:
    """Thresholds and weights of ``unusual_programs``; validated on construction.

    ``weights`` may be given as a mapping of some reasons to weights (the others keep their
    defaults); it is stored as ``((reason, weight), ...)`` in ``REASONS`` order, so the
    settings stay hashable and ``dataclasses.asdict`` works on them.
    """

    rare_share: float = 0.05
    outlier_share: float = 0.25
    min_folder_programs: int = 4
    recent_days: int = 7
    standard_ports: tuple[int, ...] = DEFAULT_STANDARD_PORTS
    max_ports: int = 32
    weights: Any = tuple(DEFAULT_WEIGHTS.items())

    def __post_init__(self) -> None:
        for name, low in (("min_folder_programs", 2), ("recent_days", 1), ("max_ports", 1)):
            value = getattr(self, name)
            if not (_is_int(value) and value >= low):
                raise ConfigError(f"hunting: {name} must be an integer >= {low}, got {value!r}")
        for name in ("rare_share", "outlier_share"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 < value < 1):
                raise ConfigError(f"hunting: {name} must be a number in (0, 1), got {value!r}")
        ports = self.standard_ports
        if isinstance(ports, (str, bytes)) or not isinstance(ports, Iterable):
            raise ConfigError(f"hunting: standard_ports must be a list of ports, got {ports!r}")
        ports = tuple(ports)
        bad = [p for p in ports if not (_is_int(p) and 0 <= p <= 65535)]
        if bad:
            raise ConfigError(f"hunting: standard_ports must be integers in 0..65535, got {bad!r}")
        object.__setattr__(self, "standard_ports", tuple(sorted(set(ports))))
        object.__setattr__(self, "weights", tuple(_weights(self.weights).items()))

    def weight(self, reason: str) -> int:
        return dict(self.weights)[reason]

    def ordered_reasons(self) -> list[str]:
        """Enabled reasons (weight > 0) by weight descending, then name: the order of ``Reasons``."""
        return sorted((r for r, w in self.weights if w > 0), key=lambda r: (-self.weight(r), r))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> HuntingSettings:
        """Settings from a YAML mapping (e.g. a ``hunting:`` section); unknown keys are errors."""
        return _from_mapping(cls, "hunting", values)

    def digest(self) -> str:
        """A short stable hash of the settings, to record with a run."""
        return stable_digest(dataclasses.asdict(self))


def _weights(given: Any) -> dict[str, int]:
    if isinstance(given, Mapping):
        items = list(given.items())
    elif isinstance(given, (tuple, list)) and all(
        isinstance(i, (tuple, list)) and len(i) == 2 for i in given
    ):
        items = [tuple(i) for i in given]
    else:
        raise ConfigError(f"hunting: weights must be a mapping of reason to weight, got {given!r}")
    unknown = sorted(str(k) for k, _ in items if k not in REASONS)
    if unknown:
        raise ConfigError(f"hunting: unknown reason(s) in weights {unknown}; known: {sorted(REASONS)}")
    out = dict(DEFAULT_WEIGHTS)
    for reason, weight in items:
        if not (_is_int(weight) and weight >= 0):
            raise ConfigError(f"hunting: weight of {reason} must be an integer >= 0, got {weight!r}")
        out[reason] = weight
    if not any(out.values()):
        raise ConfigError("hunting: every weight is 0, so no program could ever be listed")
    return out


# ------------------------------------------------------------------ change settings

CHANGE_TYPES = (
    "new_program",
    "gone_program",
    "new_ports",
    "gone_ports",
    "remote_ips_grew",
    "machines_grew",
    "machines_shrank",
)


@dataclass(frozen=True)
class ChangeSettings:
    """When a program's figures changed enough to be listed in ``policy_changes``.

    Ports and programs are listed on any change. Remote IPs and machines move a little every
    night, so they are listed only past both a ratio and an absolute step (defaults: remote IPs
    at least 1.5x and +10; machines up or down by at least 25% and 2 machines).
    """

    remote_ips_ratio: float = 1.5
    remote_ips_min: int = 10
    machines_ratio: float = 0.25
    machines_min: int = 2

    def __post_init__(self) -> None:
        for name, low in (("remote_ips_min", 1), ("machines_min", 1)):
            value = getattr(self, name)
            if not (_is_int(value) and value >= low):
                raise ConfigError(f"changes: {name} must be an integer >= {low}, got {value!r}")
        ratio = self.remote_ips_ratio
        if not (_is_number(ratio) and ratio > 1):
            raise ConfigError(f"changes: remote_ips_ratio must be a number > 1, got {ratio!r}")
        share = self.machines_ratio
        if not (_is_number(share) and 0 < share < 1):
            raise ConfigError(f"changes: machines_ratio must be a number in (0, 1), got {share!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ChangeSettings:
        """Settings from a YAML mapping (a ``changes:`` section); unknown keys are errors."""
        return _from_mapping(cls, "changes", values)


# ------------------------------------------------------------------ the query


@dataclass(frozen=True)
class PolicyConfig:
    """What the query computes. Defaults reproduce the seed KQL query exactly."""

    profile: str = "kql"
    ephemeral_start: int = 49152
    include_inbound_remote_ips: bool = False
    set_cap: int = 128  # KQL makeset() keeps at most 128 values
    distinct_machines: str = "exact"  # KQL dcount() is an estimate; exact is the default here
    server_keys_join: str = "auto"  # auto: broadcast up to 1M keys (counted), else a shuffle join
    partition_columns: tuple[str, ...] = ("EventDate",)  # date partitions to prune, if present
    exclusions: str | None = None  # benign-traffic rules file (conf/exclusions.yaml); none by default
    aliases: str | None = None  # alias rules of profile normalized; None: conf/aliases.yaml
    ephemeral_start_linux: int = 32768  # profile normalized: per-OS ephemeral ranges
    ephemeral_start_macos: int = 49152
    hunting: Any = None  # HuntingSettings, or a mapping of its fields (see fwpolicy.review.hunting)
    changes: Any = None  # ChangeSettings, or a mapping of its fields (see fwpolicy.review.changes)

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
        if not isinstance(self.hunting, HuntingSettings):
            try:
                object.__setattr__(self, "hunting", HuntingSettings.from_mapping(self.hunting))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"hunting: {e}") from e
        if not isinstance(self.changes, ChangeSettings):
            if self.changes is not None and not isinstance(self.changes, Mapping):
                raise ConfigError(f"changes: expected a mapping of settings, got {self.changes!r}")
            try:
                object.__setattr__(self, "changes", ChangeSettings.from_mapping(self.changes))
            except TypeError as e:
                raise ConfigError(f"changes: {e}") from e

    def digest(self) -> str:
        """A short stable hash of the settings, recorded with each run's output."""
        return stable_digest(dataclasses.asdict(self))


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
