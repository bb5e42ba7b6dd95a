"""Hunting table ``unusual_programs``: programs whose folder, prevalence or traffic is unusual.

The seed query's own description names the lead: a legitimate-looking connection made from an
unusual or unexpected folder. ``unusual_programs`` lists, per ``(Directionality, AliasPath)``,
the programs that meet at least one of the rules below, with a ``Score`` (the sum of the weights
of the rules met) and ``Reasons`` (the names of those rules, by weight descending, then name).
A program that meets no rule is not listed. It is computed from the matched connection rows
(``classify.match_server_keys``), never from the capped arrays of ``firewall_policy``, so no
port or address beyond a cap is missed.

Scoring (defaults of ``HuntingSettings``; the table is ``scoring_table()``; weight 0 = rule off):

| Reason | Weight | Meaning |
|---|---|---|
| `recycle_bin` | 4 | a raw path is in a recycle bin |
| `downloads_or_temp` | 3 | a raw path is in a Downloads or temp folder |
| `hidden_unix_dir` | 3 | a raw Unix path has a folder or file name starting with '.' |
| `programdata_root` | 3 | a raw path is a file directly in <drive>:\\programdata\\ |
| `public_folder` | 3 | a raw path is under \\users\\public\\ or /users/shared/ |
| `public_nonstandard_port` | 3 | outbound to a public address on a port not in standard_ports |
| `low_prevalence` | 2 | on <= max_machines_rare (2) machines, in a fleet of >= min_fleet (20) |
| `recently_first_seen` | 1 | first seen in the last recent_days (7) days of a longer window |
| `user_writable_path` | 1 | a raw path is under a user's profile |

Score = the sum of the weights of the reasons met. Path patterns (on the cleaned path, below):

* ``recycle_bin``: ``\\$recycle.bin\\``, legacy ``\\recycler\\``.
* ``downloads_or_temp``: ``\\downloads\\``, ``\\appdata\\local\\temp\\``,
  ``\\local settings\\temp\\``, ``\\windows\\temp\\``; ``/tmp/``, ``/var/tmp/``, ``/dev/shm/``,
  ``/private/tmp/``, ``/private/var/tmp/``, ``/home/<u>/downloads/``, ``/users/<u>/downloads/``.
* ``hidden_unix_dir``: a path starting with ``/`` with a segment starting with ``.`` (not ``.``
  or ``..``); the file name counts too (``/tmp/.x``).
* ``programdata_root``: ``<drive>:\\programdata\\<file>``, no subfolder.
* ``public_folder``: ``\\users\\public\\``, macOS ``/users/shared/``.
* ``user_writable_path``: ``<drive>:\\users\\<u>\\`` or ``<drive>:\\documents and settings\\<u>\\``
  (``<u>`` not Public, Default, Default User or All Users), ``/home/<u>/``, ``/users/<u>/``
  (not Shared), ``/root/``.

Rule details:

* **Path rules** read the raw ``InitiatingProcessFolderPath`` (the full path of the program),
  lower-cased, after removing a ``\\\\?\\`` or ``\\\\.\\`` prefix and turning
  ``\\Device\\HarddiskVolumeN\\`` into a drive; any drive letter counts. A program meets a path
  rule when any of its raw paths does (an alias can fold paths of several users). Path rules
  are evaluated once per distinct path, not once per connection. They stack on purpose: a file
  in ``C:\\Users\\bob\\Downloads\\`` is in a profile (1) and in Downloads (3).
* **Fleet** is the number of distinct ``DeviceId`` in the rows passed in (both directions, the
  whole window). Below ``min_fleet`` devices every program is on "few machines", so
  ``low_prevalence`` is not applied.
* **Public address**: an address that parses (IPv4 dotted quad without leading zeros, or
  IPv6, ``%zone`` removed, IPv4-mapped ``::ffff:a.b.c.d`` or ``::ffff:hhhh:hhhh`` read as the
  IPv4 address) and is in none of these ranges: IPv4 ``0.0.0.0/8`` (unspecified), ``10/8``,
  ``172.16/12``, ``192.168/16`` (RFC 1918), ``100.64/10`` (CGNAT), ``127/8`` (loopback),
  ``169.254/16`` (link-local), ``224/4`` (multicast), ``240/4`` (reserved, broadcast); IPv6
  ``::`` (unspecified), ``::1`` (loopback), ``fc00::/7`` (unique local), ``fe80::/10``
  (link-local), ``fec0::/10`` (old site-local), ``ff00::/8`` (multicast). Documentation
  ranges (``192.0.2/24``, ``198.51.100/24``, ``203.0.113/24``, ``2001:db8::/32``) count as
  public: they are not internal addresses, and traffic to them is worth a look. Text that is
  not an address (``''``, a host name, ``010.0.0.1``) is not public. Parsing is Spark
  expressions only (``split``, ``conv``, casts and higher-order functions; no UDF).
* **Standard ports** (default): 22, 25, 53, 80, 123, 443, 465, 587, 993, 995, 3389, 5223,
  8080, 8443: web, DNS, NTP, SSH, mail submission and retrieval over TLS, RDP, Apple push, and
  the usual alternative web ports. Tune ``standard_ports`` to the estate (Teams media on 3478,
  say). Only outbound rows count: an inbound row's port is the program's own listening port.
  A row with no port is not counted.
* **Recency** compares the first ``EventDate`` (UTC day) of the program with
  ``window_end - recent_days``: with the defaults, a program first seen on any of the last 7
  days of ``[window_start, window_end)``. Only the window is known, so "first seen" means first
  seen in the window; the rule is skipped when the window has ``recent_days`` days or fewer.

Columns: ``Directionality``, ``AliasPath``, ``ExamplePath`` (smallest raw path), ``Score``
(int), ``Reasons`` (array<string>), ``DistinctMachines``, ``FirstSeen``, ``LastSeen``,
``ConnectionCount`` (as in ``firewall_policy``), ``PublicNonStandardPorts`` (the 32 smallest
outbound ports that met ``public_nonstandard_port``, sorted), ``PublicRemoteIPCount`` (distinct
public addresses reached on those ports; 0 when none), ``window_start``, ``window_end``.
Every value is a function of the input rows alone (sorted arrays, minimums), so reruns agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fwpolicy.classify import ADDRESS, DEVICE, OUTBOUND, PATH
from fwpolicy.config import ConfigError, PolicyConfig
from fwpolicy.summarize import GROUP, capped_sorted, facet, with_alias

HUNTING_TABLE = "unusual_programs"

# Reason -> (default weight, what it means). Order here is the order of the docs' table.
REASONS: dict[str, tuple[int, str]] = {
    "recycle_bin": (4, "a raw path is in a recycle bin"),
    "downloads_or_temp": (3, "a raw path is in a Downloads or temp folder"),
    "hidden_unix_dir": (3, "a raw Unix path has a folder or file name starting with '.'"),
    "programdata_root": (3, "a raw path is a file directly in <drive>:\\programdata\\"),
    "public_folder": (3, "a raw path is under \\users\\public\\ or /users/shared/"),
    "public_nonstandard_port": (3, "outbound to a public address on a port not in standard_ports"),
    "low_prevalence": (
        2,
        "on <= max_machines_rare ({max_machines_rare}) machines, in a fleet of >= min_fleet ({min_fleet})",
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

HUNTING_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ExamplePath",
    "Score",
    "Reasons",
    "DistinctMachines",
    "FirstSeen",
    "LastSeen",
    "ConnectionCount",
    "PublicNonStandardPorts",
    "PublicRemoteIPCount",
    "window_start",
    "window_end",
)


# --------------------------------------------------------------------------- settings


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HuntingSettings:
    """Thresholds and weights of ``unusual_programs``; validated on construction.

    ``weights`` may be given as a mapping of some reasons to weights (the others keep their
    defaults); it is stored as ``((reason, weight), ...)`` in ``REASONS`` order, so the
    settings stay hashable and ``dataclasses.asdict`` works on them.
    """

    max_machines_rare: int = 2
    min_fleet: int = 20
    recent_days: int = 7
    standard_ports: tuple[int, ...] = DEFAULT_STANDARD_PORTS
    max_ports: int = 32
    weights: Any = tuple(DEFAULT_WEIGHTS.items())

    def __post_init__(self) -> None:
        for name, low in (("max_machines_rare", 0), ("min_fleet", 1), ("recent_days", 1), ("max_ports", 1)):
            value = getattr(self, name)
            if not (_is_int(value) and value >= low):
                raise ConfigError(f"hunting: {name} must be an integer >= {low}, got {value!r}")
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
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"hunting: unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def digest(self) -> str:
        """A short stable hash of the settings, to record with a run."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def scoring_table(settings: HuntingSettings | None = None) -> str:
    """The scoring table (Markdown) of ``settings``: reason, weight, meaning; by weight, then name."""
    s = settings or HuntingSettings()
    rows = ["| Reason | Weight | Meaning |", "|---|---|---|"]
    for reason in sorted(REASONS, key=lambda r: (-s.weight(r), r)):
        meaning = REASONS[reason][1].format(**dataclasses.asdict(s))
        rows.append(f"| `{reason}` | {s.weight(reason)} | {meaning} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- expressions


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(value)`` with ``value`` computed once (Column trees would repeat it at each use)."""
    return F.transform(F.array(value), body).getItem(0)


def _any(preds: Iterable[Column]) -> Column:
    preds = list(preds)
    out = preds[0]
    for p in preds[1:]:
        out = out | p
    return out


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"
_TAIL_QUAD = r"^(.*:)([^:]*\.[^:]*)$"
NON_PUBLIC_V4 = (
    ("0.0.0.0", 8),  # unspecified, "this network"
    ("10.0.0.0", 8),  # RFC 1918
    ("100.64.0.0", 10),  # CGNAT
    ("127.0.0.0", 8),  # loopback
    ("169.254.0.0", 16),  # link-local
    ("172.16.0.0", 12),  # RFC 1918
    ("192.168.0.0", 16),  # RFC 1918
    ("224.0.0.0", 4),  # multicast
    ("240.0.0.0", 4),  # reserved, limited broadcast
)
# (first 16-bit group & mask) == value
NON_PUBLIC_V6_FIRST_GROUP = (
    (0xFE00, 0xFC00),  # fc00::/7 unique local
    (0xFFC0, 0xFE80),  # fe80::/10 link-local
    (0xFFC0, 0xFEC0),  # fec0::/10 site-local (deprecated)
    (0xFF00, 0xFF00),  # ff00::/8 multicast
)


def _v4_int(dotted: str) -> int:
    a, b, c, d = (int(x) for x in dotted.split("."))
    return ((a * 256 + b) * 256 + c) * 256 + d


def quad_to_long(text: Column) -> Column:
    """A strict dotted quad as a long; null when the text is not one."""

    def value(t: Column) -> Column:
        number = F.aggregate(
            F.split(t, r"\."), F.lit(0).cast("long"), lambda acc, o: acc * 256 + o.cast("long")
        )
        return F.when(t.rlike(IPV4_PATTERN), number)

    return _let(text, value)


def _tail_quad_as_groups(s: Column) -> Column:
    """``...:a.b.c.d`` -> ``...:hhhh:hhhh``; text without a dotted tail unchanged; null if bad."""

    def replace(v: Column) -> Column:
        high = F.lower(F.conv(F.shiftright(v, 16).cast("string"), 10, 16))
        low = F.lower(F.conv(v.bitwiseAND(F.lit(0xFFFF)).cast("string"), 10, 16))
        return F.concat(F.regexp_extract(s, _TAIL_QUAD, 1), high, F.lit(":"), low)

    quad = F.regexp_extract(s, _TAIL_QUAD, 2)
    return F.when(quad == F.lit(""), s).otherwise(_let(quad_to_long(quad), replace))


def ipv6_groups(text: Column) -> Column:
    """Lower-case IPv6 text (no zone) -> its eight 16-bit groups as ``array<long>``; null if not IPv6."""

    def groups(x: Column) -> Column:
        return F.when(x == F.lit(""), F.array().cast("array<string>")).otherwise(F.split(x, ":", -1))

    def expand(halves: Column) -> Column:
        left, right = groups(halves.getItem(0)), groups(halves.getItem(1))
        n = F.size(left) + F.size(right)
        filled = F.concat(left, F.array_repeat(F.lit("0"), F.lit(8) - n), right)
        return F.when(F.size(halves) == 1, F.split(halves.getItem(0), ":", -1)).when(
            (F.size(halves) == 2) & (n <= 7), filled
        )

    def to_longs(g: Column) -> Column:
        valid = (F.size(g) == 8) & F.forall(g, lambda x: x.rlike("^[0-9a-f]{1,4}$"))
        return F.when(valid, F.transform(g, lambda x: F.conv(x, 16, 10).cast("long")))

    return _let(_let(F.split(_tail_quad_as_groups(text), "::", -1), expand), to_longs)


def is_public_ip(ip: Column) -> Column:
    """True when the text is an address outside the non-public ranges (module docs); never null."""

    def non_public_v4(v: Column) -> Column:
        return _any(
            v.bitwiseAND(F.lit((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF)) == F.lit(_v4_int(n))
            for n, p in NON_PUBLIC_V4
        )

    def non_public_v6(g: Column) -> Column:
        first = g.getItem(0)
        zeros_before_last = F.forall(F.slice(g, 1, 7), lambda x: x == F.lit(0))
        last = g.getItem(7)
        return (zeros_before_last & last.isin(0, 1)) | _any(
            first.bitwiseAND(F.lit(mask)) == F.lit(value) for mask, value in NON_PUBLIC_V6_FIRST_GROUP
        )

    def mapped(g: Column) -> Column:
        is_mapped = F.forall(F.slice(g, 1, 5), lambda x: x == F.lit(0)) & (g.getItem(5) == F.lit(0xFFFF))
        return F.when(is_mapped, g.getItem(6) * 65536 + g.getItem(7))

    def classify(s: Column) -> Column:
        def by_groups(g: Column) -> Column:
            v4 = F.when(g.isNull(), quad_to_long(s)).otherwise(mapped(g))
            return _let(
                v4,
                lambda v: (
                    F.when(v.isNotNull(), ~non_public_v4(v))
                    .when(g.isNotNull(), ~non_public_v6(g))
                    .otherwise(F.lit(False))
                ),
            )

        return _let(F.when(s.contains(":"), ipv6_groups(s)), by_groups)

    clean = F.regexp_replace(F.lower(F.trim(ip)), "%[^%]*$", "")
    return F.coalesce(_let(clean, classify), F.lit(False))


# Patterns run on the cleaned, lower-cased path (see ``clean_path``); Java regex syntax.
_PROFILE_EXCEPT = r"(?!(?:public|default|default user|all users)\\)"
PATH_PATTERNS: dict[str, str] = {
    "user_writable_path": (
        rf"^[a-z]:\\(?:users|documents and settings)\\{_PROFILE_EXCEPT}[^\\]+\\"
        r"|^/home/[^/]+/|^/users/(?!shared/)[^/]+/|^/root/"
    ),
    "downloads_or_temp": (
        r"\\downloads\\|\\appdata\\local\\temp\\|\\local settings\\temp\\|\\windows\\temp\\"
        r"|^/tmp/|^/var/tmp/|^/dev/shm/|^/private/tmp/|^/private/var/tmp/|^/(?:home|users)/[^/]+/downloads/"
    ),
    "public_folder": r"\\users\\public\\|^/users/shared/",
    "programdata_root": r"^[a-z]:\\programdata\\[^\\]+$",
    "recycle_bin": r"\\\$recycle\.bin\\|\\recycler\\",
    "hidden_unix_dir": r"^/(?:[^/]+/)*\.(?!\.?(?:/|$))",
}


def clean_path(path: Column) -> Column:
    """Lower-cased path; no ``\\\\?\\`` or ``\\\\.\\`` prefix; ``\\device\\harddiskvolumeN\\`` -> ``x:\\``."""
    p = F.regexp_replace(F.lower(F.coalesce(path, F.lit(""))), r"^\\\\[?.]\\", "")
    return F.regexp_replace(p, r"^\\device\\harddiskvolume[0-9]+\\", "x:\\\\")


def path_matches(clean: Column) -> dict[str, Column]:
    """Reason -> boolean Column for each path rule, on a path already passed through ``clean_path``."""
    return {name: clean.rlike(pattern) for name, pattern in PATH_PATTERNS.items()}


def path_rules(path: Column) -> dict[str, Column]:
    """Reason -> boolean Column for each path rule, on a raw folder path."""
    return path_matches(clean_path(path))


# --------------------------------------------------------------------------- table


def unusual_programs(
    matched: DataFrame,
    cfg: PolicyConfig,
    window_start: dt.date,
    window_end: dt.date,
    settings: HuntingSettings | None = None,
) -> DataFrame:
    """``unusual_programs`` rows of one window ``[window_start, window_end)`` (lazy).

    ``matched`` is ``classify.match_server_keys(conns, cfg)``. Rows that an exclude rule named
    (``Excluded``) count like the others: filter them out first to hide them from hunting too.
    Four small aggregations of ``matched`` are joined: programs (counts, devices, times),
    distinct raw paths (path rules), outbound public non-standard traffic, and the fleet size.
    """
    s = settings or HuntingSettings()
    if window_end <= window_start:
        raise ConfigError(f"empty window: end {window_end} must be after start {window_start}")
    group = list(GROUP)
    rows = with_alias(matched, cfg)
    devices = facet(rows, DEVICE)
    machines = (
        F.countDistinct("DeviceId")
        if cfg.distinct_machines == "exact"
        else F.approx_count_distinct("DeviceId")
    )
    # _first_day: the UTC day of the first sighting, as EventDate is the UTC day of Timestamp.
    programs = (
        devices.groupBy(*group)
        .agg(
            machines.cast("long").alias("DistinctMachines"),
            F.min("FirstSeen").alias("FirstSeen"),
            F.max("LastSeen").alias("LastSeen"),
            F.sum("Connections").cast("long").alias("ConnectionCount"),
        )
        .withColumn("_first_day", F.to_date("FirstSeen"))
    )

    # Path rules once per distinct raw path, then any path of the program.
    rules = path_matches(F.col("_clean"))
    paths = (
        devices.select(*group, PATH)
        .distinct()
        .withColumn("_clean", clean_path(F.col(PATH)))
        .groupBy(*group)
        .agg(
            F.min(PATH).alias("ExamplePath"),
            *(F.max(rules[r]).alias(f"_{r}") for r in PATH_REASONS),
        )
    )

    # Addresses are parsed once per distinct (program, port, address) of outbound rows on a
    # non-standard port.
    nonstandard = (F.col("Directionality") == F.lit(OUTBOUND)) & ~F.col("Port").isin(*s.standard_ports)
    candidates = facet(rows, ADDRESS).where(nonstandard).select(*group, "Port", "RemoteIP").distinct()
    public = candidates.where(is_public_ip(F.col("RemoteIP")))
    traffic = public.groupBy(*group).agg(
        capped_sorted(F.collect_set("Port"), s.max_ports).alias("PublicNonStandardPorts"),
        F.countDistinct("RemoteIP").cast("long").alias("PublicRemoteIPCount"),
    )

    fleet = devices.agg(F.countDistinct("DeviceId").alias("_fleet"))

    met: dict[str, Column] = {r: F.col(f"_{r}") for r in PATH_REASONS}
    met["low_prevalence"] = (F.col("DistinctMachines") <= F.lit(s.max_machines_rare)) & (
        F.col("_fleet") >= F.lit(s.min_fleet)
    )
    met["public_nonstandard_port"] = F.size("PublicNonStandardPorts") > 0
    if (window_end - window_start).days > s.recent_days:
        since = window_end - dt.timedelta(days=s.recent_days)
        met["recently_first_seen"] = F.col("_first_day") >= F.lit(since)
    else:
        met["recently_first_seen"] = F.lit(False)

    ordered = s.ordered_reasons()
    reasons = F.array_compact(F.array(*(F.when(met[r], F.lit(r)) for r in ordered)))
    score = sum(
        (F.when(met[r], F.lit(s.weight(r))).otherwise(F.lit(0)) for r in ordered), start=F.lit(0)
    ).cast("int")
    no_ports = F.array().cast("array<int>")
    return (
        programs.join(paths, on=group, how="inner")
        .join(traffic, on=group, how="left")
        .crossJoin(F.broadcast(fleet))
        .withColumn("PublicNonStandardPorts", F.coalesce(F.col("PublicNonStandardPorts"), no_ports))
        .withColumn("PublicRemoteIPCount", F.coalesce(F.col("PublicRemoteIPCount"), F.lit(0).cast("long")))
        .withColumn("Reasons", reasons)
        .where(F.size("Reasons") > 0)
        .withColumn("Score", score)
        .withColumn("window_start", F.lit(window_start))
        .withColumn("window_end", F.lit(window_end))
        .select(*HUNTING_COLUMNS)
    )
