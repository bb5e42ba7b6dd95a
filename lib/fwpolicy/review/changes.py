"""``policy_changes``: what changed in ``firewall_policy`` since the previous window.

A firewall policy is reviewed again every week: what is new, what is gone, what grew. Every
``run`` and ``nightly`` compares the window it writes with the latest earlier ``window_end`` of
``firewall_policy`` under the same output root and writes one row per change into
``policy_changes``, partitioned by ``window_end`` like the other window tables (a rerun replaces
the partition). ``fwpolicy diff`` prints the same rows for any two windows.

Changes, per ``(Directionality, AliasPath)`` (thresholds: ``ChangeSettings``, ``changes:`` in
the settings file):

| ChangeType | when |
|---|---|
| `new_program` | the program is in this window and not in the previous one |
| `gone_program` | the program was in the previous window and is not in this one |
| `new_ports` | ports in this window's `Ports` that the previous window did not have |
| `gone_ports` | ports of the previous window's `Ports` that this window does not have |
| `remote_ips_grew` | `RemoteIPCount` >= `remote_ips_ratio` x the previous, and `remote_ips_min` more |
| `machines_grew` | `DistinctMachines` up by `machines_ratio` of the previous and at least `machines_min` |
| `machines_shrank` | `DistinctMachines` down by as much |

``Ports`` keeps the ``set_cap`` smallest ports. When a side holds more ports than its list, a
port above the largest listed one may be there unlisted, so it is neither reported added nor
removed: a change is only claimed where both lists can see it.

Columns: ``ChangeType``, ``Directionality``, ``AliasPath``, ``Detail`` (what was added or
removed, with the figures before and after), ``PreviousWindowEnd``, ``window_end``. The first
window under an output root has no previous window, so it has no changes: its partition is
empty, and the run says so.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import CHANGE_TYPES, ChangeSettings, ConfigError
from fwpolicy.io.sink import empty_frame, read_table, table_path
from fwpolicy.io.storage import is_delta_table

CHANGES_TABLE = "policy_changes"
POLICY_TABLE = "firewall_policy"  # the table compared (tasks.run writes it under this name)
KEYS = ("Directionality", "AliasPath")
CHANGE_COLUMNS = ("ChangeType", "Directionality", "AliasPath", "Detail", "PreviousWindowEnd", "window_end")
FIGURES = ("Ports", "PortCount", "RemoteIPCount", "DistinctMachines", "ConnectionCount")
LISTED_PORTS = 20  # ports spelled out in a Detail; the rest are counted


def window_ends(spark: SparkSession, policy_path: str) -> list[dt.date]:
    """The ``window_end`` values of the ``firewall_policy`` table at ``policy_path``, sorted."""
    rows = read_table(spark, policy_path).select("window_end").distinct().collect()  # one per window
    return sorted(r["window_end"] for r in rows)


def known_window_ends(spark: SparkSession, output_root: str, *wanted: dt.date | None) -> list[dt.date]:
    """The ``window_end`` values of ``firewall_policy`` under ``output_root``, once the table is
    known to exist and to hold each of ``wanted`` (None: not asked); else a ``ConfigError`` that
    names the latest windows. What ``diff`` and ``report`` check before any work."""
    policy_path = table_path(output_root, POLICY_TABLE)
    if not is_delta_table(spark, policy_path):
        raise ConfigError(f"no {POLICY_TABLE} table under {output_root}: run `fwpolicy run` first")
    ends = window_ends(spark, policy_path)
    known = ", ".join(e.isoformat() for e in ends[-5:]) or "none"
    for d in wanted:
        if d is not None and d not in ends:
            raise ConfigError(f"no window_end {d} in {policy_path} (latest windows: {known})")
    return ends


def previous_window_end(ends: list[dt.date], window_end: dt.date) -> dt.date | None:
    """The latest ``window_end`` before ``window_end``, or None for the first window."""
    earlier = [e for e in ends if e < window_end]
    return max(earlier) if earlier else None


def _side(policy: DataFrame, tag: str) -> DataFrame:
    return policy.select(*KEYS, *(F.col(c).alias(f"{tag}{c}") for c in FIGURES), F.lit(True).alias(tag))


def _ports(ports: Column, limit: int = LISTED_PORTS) -> Column:
    """``'80, 443'``, or ``'80, 443, ... (+5 more)'`` past ``limit`` ports."""
    shown = F.array_join(F.slice(ports, 1, limit).cast("array<string>"), ", ")
    more = F.size(ports) - F.lit(limit)
    return F.when(more > 0, F.format_string("%s, ... (+%d more)", shown, more)).otherwise(shown)


def _seen(ports: Column, count: Column) -> Column:
    """Which ports a side can vouch for: all, or those up to its largest listed port when its
    list is capped (``count`` > size)."""
    capped = count > F.size(ports)
    return F.when(capped, F.array_max(ports))


def _within(ports: Column, bound: Column) -> Column:
    return F.filter(ports, lambda p: bound.isNull() | (p <= bound))


def _change(kind: str, when: Column, detail: Column) -> Column:
    if kind not in CHANGE_TYPES:
        raise ValueError(f"unknown change type {kind}")
    return F.when(when, F.struct(F.lit(kind).alias("ChangeType"), detail.alias("Detail")))


def policy_changes(
    before: DataFrame | None,
    after: DataFrame,
    previous_end: dt.date | None,
    window_end: dt.date,
    settings: ChangeSettings | None = None,
) -> DataFrame:
    """The change rows from the policy rows ``before`` (window ``previous_end``) to ``after``.

    ``before`` is None (or ``previous_end`` is None) for a first window: no rows, with the
    table's columns. Both sides are ``firewall_policy`` rows (summary rows, a few per program).
    """
    s = settings or ChangeSettings()
    spark = after.sparkSession
    if before is None or previous_end is None:
        return empty_frame(spark, changes_schema())
    joined = _side(after, "a").join(_side(before, "b"), on=list(KEYS), how="full_outer")
    a, b = (lambda c: F.col(f"a{c}")), (lambda c: F.col(f"b{c}"))
    both = F.col("a").isNotNull() & F.col("b").isNotNull()
    added = _within(F.array_except(a("Ports"), b("Ports")), _seen(b("Ports"), b("PortCount")))
    removed = _within(F.array_except(b("Ports"), a("Ports")), _seen(a("Ports"), a("PortCount")))
    ips_before, ips_after = b("RemoteIPCount"), a("RemoteIPCount")
    m_before, m_after = b("DistinctMachines"), a("DistinctMachines")
    step = F.greatest(F.lit(s.machines_min), F.ceil(m_before * F.lit(s.machines_ratio)))

    def figures(tag: str) -> Column:
        f = a if tag == "a" else b
        return F.format_string(
            "%d machines, %d connections, %d ports (%s), %d remote IPs",
            f("DistinctMachines"),
            f("ConnectionCount"),
            f("PortCount"),
            _ports(f("Ports")),
            f("RemoteIPCount"),
        )

    ports_figures = F.format_string("(ports %d -> %d)", b("PortCount"), a("PortCount"))
    changes = F.array(
        _change("new_program", F.col("b").isNull(), F.concat(F.lit("new: "), figures("a"))),
        _change("gone_program", F.col("a").isNull(), F.concat(F.lit("gone; was on "), figures("b"))),
        _change(
            "new_ports",
            both & (F.size(added) > 0),
            F.format_string("added ports %s %s", _ports(added), ports_figures),
        ),
        _change(
            "gone_ports",
            both & (F.size(removed) > 0),
            F.format_string("removed ports %s %s", _ports(removed), ports_figures),
        ),
        _change(
            "remote_ips_grew",
            both
            & (ips_after >= ips_before * F.lit(s.remote_ips_ratio))
            & (ips_after - ips_before >= F.lit(s.remote_ips_min)),
            F.format_string("remote IPs %d -> %d", ips_before, ips_after),
        ),
        _change(
            "machines_grew",
            both & (m_after - m_before >= step),
            F.format_string("machines %d -> %d", m_before, m_after),
        ),
        _change(
            "machines_shrank",
            both & (m_before - m_after >= step),
            F.format_string("machines %d -> %d", m_before, m_after),
        ),
    )
    rows = joined.select(*KEYS, F.explode(F.filter(changes, lambda c: c.isNotNull())).alias("_c"))
    return rows.select(
        F.col("_c.ChangeType").alias("ChangeType"),
        *KEYS,
        F.col("_c.Detail").alias("Detail"),
        F.lit(previous_end).alias("PreviousWindowEnd"),
        F.lit(window_end).alias("window_end"),
    )


def changes_schema() -> T.StructType:
    """The columns of ``policy_changes``."""
    return T.StructType(
        [
            T.StructField("ChangeType", T.StringType()),
            T.StructField("Directionality", T.StringType()),
            T.StructField("AliasPath", T.StringType()),
            T.StructField("Detail", T.StringType()),
            T.StructField("PreviousWindowEnd", T.DateType()),
            T.StructField("window_end", T.DateType()),
        ]
    )


def policy_window(spark: SparkSession, policy_path: str, window_end: dt.date) -> DataFrame:
    """The ``firewall_policy`` rows of one window."""
    return read_table(spark, policy_path).where(F.col("window_end") == F.lit(window_end))


def diff(
    spark: SparkSession,
    output_root: str,
    window_end: dt.date,
    against: dt.date | None = None,
    settings: ChangeSettings | None = None,
) -> tuple[DataFrame, dt.date | None]:
    """``fwpolicy diff``: the changes from ``against`` (default: the previous window) to
    ``window_end`` in ``firewall_policy`` under ``output_root``, and the window compared
    against (None: ``window_end`` is the first)."""
    ends = known_window_ends(spark, output_root, window_end, against)
    policy_path = table_path(output_root, POLICY_TABLE)
    if against is not None and against >= window_end:
        raise ConfigError(f"--against {against} must be before --window-end {window_end}")
    previous = against or previous_window_end(ends, window_end)
    before = policy_window(spark, policy_path, previous) if previous else None
    after = policy_window(spark, policy_path, window_end)
    return policy_changes(before, after, previous, window_end, settings), previous
