"""Hunting table ``unusual_programs``: programs whose folder, prevalence or traffic is unusual.

The seed query's own description names the lead: a legitimate-looking connection made from an
unusual or unexpected folder. ``unusual_programs`` lists, per ``(Directionality, AliasPath)``,
the programs that meet at least one of the rules below, with a ``Score`` (the sum of the weights
of the rules met) and ``Reasons`` (the names of those rules, by weight descending, then name).
A program that meets no rule is not listed. It is computed from the matched connection rows
(``seed.SeedQuery``), never from the capped arrays of ``firewall_policy``, so no
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
| `system_folder_outlier` | 3 | in a system folder, on <= outlier_share (0.25) of its folder's median |
| `low_prevalence` | 2 | on at most rare_share (0.05) of the machines of its OS family (at least 1, not all) |
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
  are evaluated once per program and device, not once per connection. They stack on purpose:
  a file in ``C:\\Users\\bob\\Downloads\\`` is in a profile (1) and in Downloads (3).
* **Prevalence is relative**, so a lab, a branch office or a pilot group has rare programs too.
  A program's OS family is that of its smallest raw path (``os_family_expr``: a path starting
  with ``/`` is Linux or macOS, any other Windows); the family's machines are the distinct
  ``DeviceId`` that ran a program of that family in the window. ``low_prevalence``: the
  program runs on at most ``max(1, floor(rare_share x family machines))`` machines, and not on
  all of them (in a family of 3 machines, a program on 1 is rare; in one of 1,000, a program
  on up to 50).
* **System folder outlier**: the program's smallest raw path is directly in ``<drive>:\\windows``,
  ``\\windows\\system32``, ``\\windows\\syswow64``, ``\\program files`` or ``\\program files (x86)``
  (not a subfolder, where each product keeps its own programs), that folder holds at least
  ``min_folder_programs`` programs, and the program runs on at most ``max(1, floor(outlier_share
  x median))`` machines, and fewer than the median, where the median is that of the folder's
  programs' ``DistinctMachines`` (a program's larger figure of its two directions). Windows
  components run on every machine; a binary planted there under a made-up name runs on one.
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

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fwpolicy.config import (
    PATH_REASONS,
    REASONS,
    ConfigError,
    HuntingSettings,
)
from fwpolicy.query.normalized import os_family_expr
from fwpolicy.query.seed import ADDRESS, DEVICE, GROUP, OUTBOUND, PATH, SeedQuery, capped_sorted, facet
from fwpolicy.review.addresses import any_of, ipv6_groups, let, quad_to_long

HUNTING_TABLE = "unusual_programs"

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


def scoring_table(settings: HuntingSettings | None = None) -> str:
    """The scoring table (Markdown) of ``settings``: reason, weight, meaning; by weight, then name."""
    s = settings or HuntingSettings()
    rows = ["| Reason | Weight | Meaning |", "|---|---|---|"]
    for reason in sorted(REASONS, key=lambda r: (-s.weight(r), r)):
        meaning = REASONS[reason][1].format(**dataclasses.asdict(s))
        rows.append(f"| `{reason}` | {s.weight(reason)} | {meaning} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- expressions


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


def is_public_ip(ip: Column) -> Column:
    """True when the text is an address outside the non-public ranges (module docs); never null."""

    def non_public_v4(v: Column) -> Column:
        return any_of(
            v.bitwiseAND(F.lit((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF)) == F.lit(_v4_int(n))
            for n, p in NON_PUBLIC_V4
        )

    def non_public_v6(g: Column) -> Column:
        first = g.getItem(0)
        zeros_before_last = F.forall(F.slice(g, 1, 7), lambda x: x == F.lit(0))
        last = g.getItem(7)
        return (zeros_before_last & last.isin(0, 1)) | any_of(
            first.bitwiseAND(F.lit(mask)) == F.lit(value) for mask, value in NON_PUBLIC_V6_FIRST_GROUP
        )

    def mapped(g: Column) -> Column:
        is_mapped = F.forall(F.slice(g, 1, 5), lambda x: x == F.lit(0)) & (g.getItem(5) == F.lit(0xFFFF))
        return F.when(is_mapped, g.getItem(6) * 65536 + g.getItem(7))

    def classify(s: Column) -> Column:
        def by_groups(g: Column) -> Column:
            v4 = F.when(g.isNull(), quad_to_long(s)).otherwise(mapped(g))
            return let(
                v4,
                lambda v: (
                    F.when(v.isNotNull(), ~non_public_v4(v))
                    .when(g.isNotNull(), ~non_public_v6(g))
                    .otherwise(F.lit(False))
                ),
            )

        groups = F.transform(ipv6_groups(s), lambda x: F.conv(x, 16, 10).cast("long"))
        return let(F.when(s.contains(":"), groups), by_groups)

    clean = F.regexp_replace(F.lower(F.trim(ip)), "%[^%]*$", "")
    return F.coalesce(let(clean, classify), F.lit(False))


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


# The folders of the OS and of programs installed for every user, themselves (not their
# subfolders, where each product keeps programs of its own, used as much as it is): a binary
# there that few machines run, beside components every machine runs, is how a masquerading
# binary looks.
SYSTEM_FOLDER = r"^[a-z]:\\(?:windows(?:\\system32|\\syswow64)?|program files|program files \(x86\))$"


def folder_of(clean: Column) -> Column:
    r"""The folder of a cleaned Windows path (``c:\windows\system32`` of ``...\svchost.exe``)."""
    return F.regexp_extract(clean, r"^(.*)\\[^\\]*$", 1)


def system_folder_medians(located: DataFrame, s: HuntingSettings) -> DataFrame:
    """Per system folder (``_folder``) with at least ``min_folder_programs`` programs: the median
    ``DistinctMachines`` of its programs (``_folder_median``).

    ``located``: programs with ``AliasPath``, ``DistinctMachines`` and ``_folder``. A program
    counts once per folder, with its larger figure over both directions."""
    per_program = (
        located.where(F.col("_folder").rlike(SYSTEM_FOLDER))
        .groupBy("_folder", "AliasPath")
        .agg(F.max("DistinctMachines").alias("_m"))
    )
    return (
        per_program.groupBy("_folder")
        .agg(F.median("_m").alias("_folder_median"), F.count(F.lit(1)).alias("_programs"))
        .where(F.col("_programs") >= F.lit(s.min_folder_programs))
        .select("_folder", "_folder_median")
    )


# --------------------------------------------------------------------------- table


def unusual_programs(query: SeedQuery, settings: HuntingSettings | None = None) -> DataFrame:
    """``unusual_programs`` rows of the query's window (lazy).

    Read from the query's results, not from the events: prevalence and sightings from its
    per-device rows (``SeedQuery.devices``), paths and traffic from its aliased legs
    (``SeedQuery.rows``). Traffic that an exclude rule took counts like the rest here: malware
    can borrow a name an exclusion trusts.
    """
    s = settings or query.cfg.hunting
    window_start, window_end = query.window
    if window_end <= window_start:
        raise ConfigError(f"empty window: end {window_end} must be after start {window_start}")
    group = list(GROUP)
    machines = (
        F.countDistinct("DeviceId")
        if query.cfg.distinct_machines == "exact"
        else F.approx_count_distinct("DeviceId")
    )
    # _first_day: the UTC day of the first sighting, as EventDate is the UTC day of Timestamp.
    programs = (
        query.devices.groupBy(*group)
        .agg(
            machines.cast("long").alias("DistinctMachines"),
            F.min("FirstSeen").alias("FirstSeen"),
            F.max("LastSeen").alias("LastSeen"),
            F.sum("Connections").cast("long").alias("ConnectionCount"),
        )
        .withColumn("_first_day", F.to_date("FirstSeen"))
    )

    # Path rules per raw path, then any path of the program. Read from the device facet, which
    # holds every raw path of the matched rows in a few rows per program and device: the optimizer
    # folds a distinct under min and max (both ignore duplicates) into one sort-based
    # aggregation over its input (a min of text is not a hash aggregation), and the address
    # facet has a row per program and peer.
    rules = path_matches(F.col("_clean"))
    paths = (
        facet(query.rows, DEVICE)
        .select(*group, PATH)
        .distinct()
        .withColumn("_clean", clean_path(F.col(PATH)))
        .groupBy(*group)
        .agg(
            F.min(PATH).alias("ExamplePath"),
            *(F.max(rules[r]).alias(f"_{r}") for r in PATH_REASONS),
        )
    )

    # Outbound traffic on a non-standard port to a public address.
    nonstandard = (F.col("Directionality") == F.lit(OUTBOUND)) & ~F.col("Port").isin(*s.standard_ports)
    candidates = facet(query.rows, ADDRESS).where(nonstandard).select(*group, "Port", "RemoteIP").distinct()
    # The address expression is large and partly interpreted (higher-order functions): run it
    # once per distinct address, not once per program and port. A filter on the grouping key
    # alone would be pushed below the grouping, to every row; this one reads the count too.
    per_address = candidates.groupBy("RemoteIP").agg(F.count(F.lit(1)).alias("_programs"))
    addresses = per_address.where(F.when(F.col("_programs") > 0, is_public_ip(F.col("RemoteIP"))))
    public = candidates.join(addresses, on="RemoteIP", how="left_semi")
    traffic = public.groupBy(*group).agg(
        capped_sorted(F.collect_set("Port"), s.max_ports).alias("PublicNonStandardPorts"),
        F.countDistinct("RemoteIP").cast("long").alias("PublicRemoteIPCount"),
    )

    # Prevalence is relative to the machines of the program's OS family, and to its folder.
    located = (
        programs.join(paths, on=group, how="inner")
        .withColumn("_family", os_family_expr(F.col("ExamplePath")))
        .withColumn("_folder", folder_of(clean_path(F.col("ExamplePath"))))
    )
    # Machines per family: every device of a matched row, by the family of that row's raw path.
    family_machines = (
        facet(query.rows, DEVICE)
        .select(os_family_expr(F.col(PATH)).alias("_family"), "DeviceId")
        .groupBy("_family")
        .agg(F.countDistinct("DeviceId").alias("_family_machines"))
    )

    met: dict[str, Column] = {r: F.col(f"_{r}") for r in PATH_REASONS}
    on = F.col("DistinctMachines")
    rare_at = F.greatest(F.lit(1), F.floor(F.col("_family_machines") * F.lit(s.rare_share)))
    met["low_prevalence"] = (on <= rare_at) & (on < F.col("_family_machines"))
    outlier_at = F.greatest(F.lit(1), F.floor(F.col("_folder_median") * F.lit(s.outlier_share)))
    # No median (not a system folder, or too few programs in it): never an outlier.
    met["system_folder_outlier"] = F.coalesce(
        (on <= outlier_at) & (on < F.col("_folder_median")), F.lit(False)
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
    # Families and system folders are a handful of rows each.
    return (
        located.join(traffic, on=group, how="left")
        .join(F.broadcast(family_machines), on="_family", how="inner")
        .join(F.broadcast(system_folder_medians(located, s)), on="_folder", how="left")
        .withColumn("PublicNonStandardPorts", F.coalesce(F.col("PublicNonStandardPorts"), no_ports))
        .withColumn("PublicRemoteIPCount", F.coalesce(F.col("PublicRemoteIPCount"), F.lit(0).cast("long")))
        .withColumn("Reasons", reasons)
        .where(F.size("Reasons") > 0)
        .withColumn("Score", score)
        .withColumn("window_start", F.lit(window_start))
        .withColumn("window_end", F.lit(window_end))
        .select(*HUNTING_COLUMNS)
    )
