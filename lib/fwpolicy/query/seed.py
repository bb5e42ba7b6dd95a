"""The seed query, clause by clause, as the plan Spark runs.

``seed/firewall-policy-design-assistant.txt`` reads ``DeviceNetworkEvents`` three times: once for
the server keys and once for each leg, then summarises the union. This module follows it in
its order, and each section is one clause of it:

1. **where** (``where_clauses``): every event of the window gets its fate: the leg it belongs
   to (``Directionality``), or the first clause of the query's ``where`` that removes it
   (``Removed``), or why its values are unusable (``Removed = 'rejected:...'``). The legs are
   disjoint: inbound needs ``LocalPort < E``, outbound ``LocalPort >= E``.
   The source is then *reduced* once (``connection_table``): each event is counted in the
   facets of its kind, each grouped as coarsely as the summary allows. This is the job's one
   large aggregation: one scan, one hash aggregation.
2. **server keys** (``server_keys``): ``distinct DeviceId, InitiatingProcessFolderPath,
   LocalPort`` of listen and accept events, taken from the reduced table.
3. **inbound semi join** (``inbound_leg``): inbound rows whose key is a server key, broadcast
   when the keys are small. The nightly applies it once more, early, to its blocks before they
   merge (``served_only``).
4. **outbound leg** (``outbound_leg``), with its anti join explained there.
5. **alias** (``with_alias``): ``AliasPath`` of each distinct folder path, joined back.
6. **summarize** (``summarize``): ``count()``, ``dcount(DeviceId)``, ``makeset(Port)`` and
   ``makeset(RemoteIP)`` by ``(Directionality, AliasPath)``, plus the evidence columns.

``seed_query`` chains them. ``tasks.run``, ``tasks.nightly`` and the tests all go through it,
so the plan that is tested is the plan that runs. Its ``summary`` is computed once, split by
the benign-traffic rule that excluded the traffic (``Excluded``, null for policy traffic):
``firewall_policy``, ``excluded_connections``, ``unusual_programs`` and the run audit read it
(or the reduced rows under it) instead of aggregating the events again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fwpolicy.config import PolicyConfig
from fwpolicy.io.session import session_conf
from fwpolicy.io.source import OPTIONAL_STRING_COLUMNS, STRING_COLUMNS
from fwpolicy.query.aliasing import alias_expr
from fwpolicy.query.kql import kql_startswith, kql_string
from fwpolicy.query.normalized import ephemeral_start_expr

SERVER_ACTIONS = ("InboundConnectionAccepted", "ListeningConnectionCreated")
OUTBOUND_ACTIONS = ("ConnectionSuccess", "ConnectionFound", "ConnectionRequest")
INBOUND_ACTIONS = (*SERVER_ACTIONS, *OUTBOUND_ACTIONS)
INBOUND, OUTBOUND = "Inbound", "Outbound"

PATH = "InitiatingProcessFolderPath"
# Clauses of the query's `where`, in the order a removed row is attributed to them.
REMOVAL_CLAUSES = ("loopback", "local_equals_remote", "link_local", "action_type", "port_range")
SERVER_KEY = ("Directionality", "DeviceId", PATH, "Port")
GROUP = ("Directionality", "AliasPath")
# The summary's grain: the policy's group, split by the exclude rule that took the traffic.
SUMMARY_GROUP = ("Excluded", *GROUP)
TOP_URLS = 5

# The seed KQL query's own columns, the ones other engines are compared on (bench/run.py).
KQL_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ConnectionCount",
    "DistinctMachines",
    "Ports",
    "RemoteIPs",
    "PortCount",
    "RemoteIPCount",
)
POLICY_COLUMNS = (
    *KQL_COLUMNS,
    "FirstSeen",
    "LastSeen",
    "DaysObserved",
    "DeviceDays",
    "Protocols",
    "TopRemoteUrls",
    "ExampleFileName",
    "ExamplePath",
    "Tags",
    "window_start",
    "window_end",
)

# The reduced table's key columns (``connection_table``); each facet keeps some of them.
KEY_COLUMNS = (
    "EventDate",
    "Directionality",
    "DeviceId",
    PATH,
    "Port",
    "RemoteIP",
    "Excluded",
    "Removed",
    "FileName",
    "Protocol",
    "RemoteUrl",
    "Tags",
)
# Values of the reduced table's Facet column.
DEVICE, ADDRESS, INBOUND_DETAIL = 0, 1, 3
PROGRAM = ("Directionality", PATH, "Excluded")
FACETS = {
    # per program and device: counts, first and last sighting, the days seen, and the file
    # name and protocol (the file name follows the path, the protocol the program: they add few
    # rows here, where a peer's key would carry them for every address)
    DEVICE: (*PROGRAM, "DeviceId", "FileName", "Protocol"),
    # per program and peer: port, address, and what describes the traffic (the URL follows the
    # address)
    ADDRESS: (*PROGRAM, "Port", "RemoteIP", "RemoteUrl", "Tags"),
    # an inbound event keeps every key: its server key decides whether it is kept at all
    INBOUND_DETAIL: tuple(c for c in KEY_COLUMNS if c != "EventDate"),
}
DAY_BITS = "DayBits"  # DayBits0, DayBits1, ...: days of the window seen (see day_bits)
# Key columns that only the benign-traffic rules vary. A run without rules leaves them out of
# the events (``where_clauses``) and ``connection_table`` adds them after grouping (``ruleless``).
RULE_KEYS = ("Excluded", "Tags")


# ================================================================================ 1. where


def normalize_nulls(events: DataFrame) -> DataFrame:
    """KQL strings are never null: a missing string reads as ``''`` in every filter and key."""
    names = [c for c in (*STRING_COLUMNS, *OPTIONAL_STRING_COLUMNS) if c in events.columns]
    return events.withColumns({c: kql_string(c) for c in names})


def ephemeral_start(cfg: PolicyConfig) -> Column:
    """``EphemeralRangeStart`` for each row (per OS under profile ``normalized``)."""
    if cfg.profile == "normalized":
        return ephemeral_start_expr(PATH, cfg)
    return F.lit(cfg.ephemeral_start)


def direction(cfg: PolicyConfig) -> Column:
    """'Inbound', 'Outbound', or null for a row that belongs to neither leg.

    ``ActionType in (...)`` and ``LocalPort < E`` / ``>= E`` of the two legs. ``isin`` is
    case-sensitive, as KQL's ``in`` is; a null port passes neither comparison, as a KQL
    ``where`` on null is false.
    """
    e = ephemeral_start(cfg)
    action = F.col("ActionType")
    return F.when(action.isin(*INBOUND_ACTIONS) & (F.col("LocalPort") < e), F.lit(INBOUND)).when(
        action.isin(*OUTBOUND_ACTIONS) & (F.col("LocalPort") >= e), F.lit(OUTBOUND)
    )


def removal_reason() -> Column:
    """The first clause of the query's ``where`` that removes a row, or null if none does.

    ``RemoteIPType != 'Loopback' and LocalIP != RemoteIP and RemoteIP !startswith '169.254'``,
    then the action and port clauses (a row with a valid action in neither leg fails the port
    range). ``Rejected`` (unusable values, from the schema contract) comes first.
    """
    return (
        F.when(F.col("Rejected").isNotNull(), F.concat(F.lit("rejected:"), F.col("Rejected")))
        .when(F.col("RemoteIPType") == F.lit("Loopback"), F.lit("loopback"))
        .when(F.col("LocalIP") == F.col("RemoteIP"), F.lit("local_equals_remote"))
        .when(kql_startswith("RemoteIP", "169.254"), F.lit("link_local"))
        .when(~F.col("ActionType").isin(*INBOUND_ACTIONS), F.lit("action_type"))
        .when(F.col("Directionality").isNull(), F.lit("port_range"))
    )


def ruleless(name: str) -> Column:
    """The value a rule key (``RULE_KEYS``) has for every kept event of a run without rules."""
    return F.lit(None).cast("string") if name == "Excluded" else F.array().cast("array<string>")


def _optional(events: DataFrame, name: str) -> Column:
    return F.col(name) if name in events.columns else F.lit("")


def where_clauses(
    events: DataFrame,
    cfg: PolicyConfig,
    excluded: Column | None = None,
    tags: Column | None = None,
) -> DataFrame:
    """Each event's fate and the columns its connection is keyed and described by.

    ``Port`` is ``LocalPort`` inbound and ``RemotePort`` outbound; inbound ``RemoteIP`` is
    ``''`` unless ``include_inbound_remote_ips`` (the query's ``extend``). ``excluded`` (rule
    name or null) and ``tags`` (array of rule names) come from the benign-traffic rules
    (``fwpolicy.review.exclusions``); they never change which rows KQL keeps. Without them the
    ``Excluded`` and ``Tags`` columns are left out: every event would carry the same value
    (``RULE_KEYS``), and ``connection_table`` adds it once per reduced row instead.
    """
    events = normalize_nulls(events)
    if "Rejected" not in events.columns:
        events = events.withColumn("Rejected", F.lit(None).cast("string"))
    tagged = events.withColumn("Directionality", direction(cfg)).withColumn("Removed", removal_reason())
    kept = F.col("Removed").isNull()
    inbound = F.col("Directionality") == F.lit(INBOUND)
    remote_ip = (
        F.col("RemoteIP")
        if cfg.include_inbound_remote_ips
        else F.when(inbound, F.lit("")).otherwise(F.col("RemoteIP"))
    )

    def key(c: Column) -> Column:
        # Removed rows keep only their day and reason, so they collapse to one row each.
        return F.when(kept, c)

    by_rules = []
    if excluded is not None:
        by_rules.append(key(excluded).alias("Excluded"))
    if tags is not None:
        by_rules.append(F.when(kept, tags).otherwise(ruleless("Tags")).alias("Tags"))
    return tagged.select(
        F.to_date("Timestamp").alias("EventDate"),
        key(F.col("Directionality")).alias("Directionality"),
        key(F.col("DeviceId")).alias("DeviceId"),
        key(F.col(PATH)).alias(PATH),
        key(F.when(inbound, F.col("LocalPort")).otherwise(F.col("RemotePort"))).alias("Port"),
        key(remote_ip).alias("RemoteIP"),
        F.col("Removed"),
        (kept & inbound & F.col("ActionType").isin(*SERVER_ACTIONS)).alias("ServerAction"),
        F.col("Timestamp"),
        key(_optional(tagged, "InitiatingProcessFileName")).alias("FileName"),
        key(_optional(tagged, "Protocol")).alias("Protocol"),
        key(_optional(tagged, "RemoteUrl")).alias("RemoteUrl"),
        *by_rules,
    )


# -------------------------------------------------------------------------------- reduce


def day_bits(days: Column, start: dt.date, end: dt.date) -> dict[str, Column]:
    """The days of ``[start, end)`` as bit words: ``DayBits<w>`` has bit ``i`` set for day
    ``64 * w + i`` of the window. ``days`` is a date column: each row sets the bit of its day
    (none when the date is null); OR-ing words over rows gives the set of days they cover, and
    ``bit_count`` its size.

    With these, "on how many days, and on how many device-days, was a program seen" needs one
    row per program and device instead of one per program, device and day.
    """
    index = F.datediff(days, F.lit(start))  # F.shiftleft takes only a Python int shift
    one = F.lit(1).cast("long")
    words = -(-(end - start).days // 64)
    return {
        f"{DAY_BITS}{w}": F.when(
            (index >= 64 * w) & (index < 64 * (w + 1)), F.call_function("shiftleft", one, index - 64 * w)
        ).otherwise(F.lit(0).cast("long"))
        for w in range(max(words, 1))
    }


def day_bit_columns(df: DataFrame) -> list[str]:
    """The ``DayBits<w>`` columns of ``df``, in word order."""
    return sorted((c for c in df.columns if c.startswith(DAY_BITS)), key=lambda c: int(c[len(DAY_BITS) :]))


def _facet_key(name: str, daily: bool, types: dict[str, str], value: Column | None = None) -> Column:
    """Key column ``name`` of a facet row: its value (``value``, default the column ``name``)
    where the row's ``Facet`` keeps it (``FACETS``), null elsewhere. ``Removed`` is kept by every
    facet, ``EventDate`` by every facet of a daily table and by none otherwise (the day words
    stand for it)."""
    value = F.col(name) if value is None else value
    if name == "Removed" or (name == "EventDate" and daily):
        return value
    keeping = [facet for facet, columns in FACETS.items() if name in columns]
    if not keeping:
        return F.lit(None).cast(types[name])
    return F.when(F.col("Facet").isin(*keeping), value)


def connection_table(tagged: DataFrame, window: tuple[dt.date, dt.date] | None = None) -> DataFrame:
    """The reduced table: every event counted once in each facet of its kind (``FACETS``).

    An outbound event is counted twice, each time as coarsely as the summary allows:

    * ``DEVICE``: per program, device, file name and protocol: counts, first and last
      sighting; the days seen as ``DayBits<w>`` words over ``window``;
    * ``ADDRESS``: per program, port, remote IP, URL and tags.

    An inbound event is counted once, in ``INBOUND_DETAIL``, with every key column: it must
    keep its server key ``(DeviceId, path, LocalPort)`` for the semi join, and the summary reads
    it as a row of each facet (``facet``). ``IsServer`` says whether a listen or accept was
    among its events. A removed event is counted in ``DEVICE`` only, one row per reason (and
    day), so every event read is counted exactly once in ``DEVICE`` or ``INBOUND_DETAIL``
    (what the run audit sums).

    Each event is exploded into its facet numbers only (a one- or two-element array); the key
    columns are then projected from the event itself, null where the facet does not keep them,
    straight into the aggregation's key: no row of all the keys is built and copied per facet.
    A run without rules groups without ``Excluded`` and ``Tags``, whose values it adds after.
    Only count, min, max and bit-or are computed, on keys only, so this stays a hash
    aggregation that spills rather than sorts. ``window=None`` keeps ``EventDate`` in every
    facet instead of day words: the nightly partials, whose every aggregate merges again
    (sum, min, max, bit-or), so they roll up exactly (``roll_up``).
    """
    daily = window is None
    types = dict(tagged.dtypes)
    numbers = (
        F.when(F.col("Removed").isNotNull(), F.array(F.lit(DEVICE)))
        .when(F.col("Directionality") == F.lit(INBOUND), F.array(F.lit(INBOUND_DETAIL)))
        .otherwise(F.array(F.lit(DEVICE), F.lit(ADDRESS)))
    )
    bits = {} if daily else day_bits(F.col("EventDate"), *window)
    exploded = tagged.select(
        "*", F.explode(numbers.cast("array<tinyint>")).alias("Facet"), *(c.alias(n) for n, c in bits.items())
    )
    absent = [name for name in RULE_KEYS if name not in tagged.columns]  # a run without rules
    keys = [_facet_key(name, daily, types).alias(name) for name in KEY_COLUMNS if name not in absent]
    reduced = exploded.groupBy("Facet", *keys).agg(
        F.count(F.lit(1)).alias("Connections"),
        F.max("ServerAction").alias("IsServer"),
        F.min("Timestamp").alias("FirstSeen"),
        F.max("Timestamp").alias("LastSeen"),
        *(F.bit_or(name).alias(name) for name in bits),
    )
    if not absent:
        return reduced
    added = {name: _facet_key(name, daily, types, ruleless(name)) for name in absent}
    measures = [c for c in reduced.columns if c not in ("Facet", *KEY_COLUMNS)]
    return reduced.withColumns(added).select("Facet", *KEY_COLUMNS, *measures)


def merge_rows(rows: DataFrame, bits: list[str], extra_keys: tuple[str, ...] = ()) -> DataFrame:
    """Rows of the reduced table with equal keys merged into one: every aggregate merges again
    (``bits``: the day-word columns, OR-ed; ``extra_keys``: more grouping columns)."""
    return rows.groupBy("Facet", *KEY_COLUMNS, *extra_keys).agg(
        F.sum("Connections").alias("Connections"),
        F.max("IsServer").alias("IsServer"),
        F.min("FirstSeen").alias("FirstSeen"),
        F.max("LastSeen").alias("LastSeen"),
        *(F.bit_or(name).alias(name) for name in bits),
    )


# ========================================================================= 2. server keys


def server_keys(conns: DataFrame) -> DataFrame:
    """``ServerConnections``: distinct ``(DeviceId, path, LocalPort)`` that listened or accepted.

    ``Directionality`` is part of the key so that the join below can never match an outbound
    row; ``LocalPort`` is the inbound rows' ``Port``. Rows a ``where`` clause removed are not
    servers, whatever their actions."""
    kept_server = F.col("Removed").isNull() & (F.col("Facet") == F.lit(INBOUND_DETAIL)) & F.col("IsServer")
    return conns.where(kept_server).select(*SERVER_KEY).distinct().withColumn("_server_key", F.lit(True))


# ================================================================= 3. inbound semi join


# Under ``server_keys_join: auto``, a counted key set of at most this many keys is broadcast.
BROADCAST_KEYS = 1_000_000


def _join_hint(keys: DataFrame, cfg: PolicyConfig, counted: int | None = None) -> DataFrame:
    """``server_keys_join``: ``broadcast`` ships the keys to every task; ``shuffle`` forces a
    sort-merge join for key sets too large to broadcast (100k devices x tens of listeners);
    ``auto`` broadcasts ``counted`` keys (``from_connections`` counts them over a kept table)
    up to ``BROADCAST_KEYS`` and shuffles more. Uncounted, it leaves the choice to adaptive
    execution, which broadcasts keys measured small, but only once the reduced rows have
    already been shuffled for the other plan."""
    if cfg.server_keys_join == "broadcast":
        return F.broadcast(keys)
    if cfg.server_keys_join == "shuffle":
        return keys.hint("merge")
    if counted is not None:
        return F.broadcast(keys) if counted <= BROADCAST_KEYS else keys.hint("merge")
    return keys


def inbound_leg(conns: DataFrame, cfg: PolicyConfig, counted: int | None = None) -> DataFrame:
    """``join kind=leftsemi ServerConnections on DeviceId, InitiatingProcessFolderPath, LocalPort``
    over the inbound rows, and the outbound rows passed through untouched.

    Written as one left join on ``SERVER_KEY`` and a filter, so one pass over the reduced table
    serves both legs: outbound rows never match (their ``Directionality`` differs) and are kept
    by ``outbound_leg``'s condition. ``counted``: the number of server keys, if known."""
    kept = conns.where(F.col("Removed").isNull())
    keys = _join_hint(server_keys(conns), cfg, counted)
    return kept.join(keys, on=list(SERVER_KEY), how="left")


def served_only(conns: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """The semi join applied early, to reduced rows that have yet to merge (the nightly's blocks).

    An inbound row whose server key no row of ``conns`` holds is dropped; every other row is
    kept as it is. Merging never changes a row's key, and a key is a server key of the window
    when any block holds a listen or accept for it, so ``inbound_leg`` over the merged rows keeps
    exactly what it would have kept. What this saves: a client's connection from a port below
    the ephemeral start (Linux's 32768-49151 under profile ``kql``) is an inbound candidate with
    its own key per port, which no day repeats; the blocks carry them until the join drops them.
    """
    keys = _join_hint(server_keys(conns), cfg)
    unserved = (F.col("Facet") == F.lit(INBOUND_DETAIL)) & F.col("_server_key").isNull()
    return conns.join(keys, on=list(SERVER_KEY), how="left").where(~unserved).drop("_server_key")


# ======================================================================= 4. outbound leg


def outbound_leg(joined: DataFrame) -> DataFrame:
    """The two legs after the joins: outbound rows, and inbound rows that found a server key.

    The seed's outbound leg ends with ``join kind=leftanti ServerConnections on DeviceId,
    InitiatingProcessFolderPath, LocalPort``. That join can never remove a row, so it is not
    performed: a server key has ``LocalPort < E`` and an outbound row ``LocalPort >= E`` (per
    row under profile ``normalized``, where ``E`` follows the path, which is in the key).
    ``tests/integration/test_seed.py`` performs the anti join on rows built to match if it could.
    """
    keep = (F.col("Directionality") == F.lit(OUTBOUND)) | F.col("_server_key").isNotNull()
    return joined.where(keep).drop("_server_key", "IsServer", "Removed")


def matched_rows(conns: DataFrame, cfg: PolicyConfig, counted: int | None = None) -> DataFrame:
    """The reduced rows of both legs, as the query's ``union`` holds them (before the alias)."""
    return outbound_leg(inbound_leg(conns, cfg, counted))


# ============================================================================== 5. alias


def alias_table(rows: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """``(path, AliasPath)`` for each distinct folder path of ``rows``, under the profile.

    ``invoke AliasPath()`` once per distinct path: a fleet has far fewer programs than
    connections, and the alias expression is large."""
    return rows.select(PATH).distinct().withColumn("AliasPath", alias_expr(PATH, cfg.profile, cfg))


def with_alias(rows: DataFrame, cfg: PolicyConfig, paths: DataFrame | None = None) -> DataFrame:
    """``rows`` with the ``AliasPath`` of each folder path (the alias table is broadcast).

    ``paths``: rows holding at least every folder path of ``rows`` to take the table from
    (default ``rows``). ``from_connections`` passes the reduced table's device facet, so the
    table does not compute the legs a second time; an alias is a function of the path alone,
    and the inner join keeps only the paths ``rows`` holds."""
    if "AliasPath" in rows.columns:
        return rows
    return rows.join(F.broadcast(alias_table(rows if paths is None else paths, cfg)), on=PATH, how="inner")


# ========================================================================== 6. summarize


def capped_sorted(values: Column, cap: int) -> Column:
    """The first ``cap`` values of an array, in ascending order."""
    return F.slice(F.sort_array(values), 1, cap)


def capped_distinct(df: DataFrame, keys: tuple[str, ...], value: str, cap: int) -> DataFrame:
    """``makeset(value)`` per group of ``keys``: the ``cap`` smallest distinct values, and their
    full count so nothing is lost silently.

    Columns: ``keys``, ``<value>s`` (sorted array), ``<value>Count`` (long). A group with only
    null values has no row. Remote IPs are not bounded (a browser across 100k devices meets
    millions), so values are ranked with a window rather than gathered in one array per group.
    The distinct values are found first, by a hash aggregation: the rows (one per program and
    peer) hold each address many times over, and the window sorts only what is left.
    """
    pairs = df.select(*keys, value).where(F.col(value).isNotNull()).distinct()
    rank = F.row_number().over(Window.partitionBy(*keys).orderBy(value))  # values are distinct
    ranked = pairs.withColumn("_rank", rank)
    return ranked.groupBy(*keys).agg(
        F.sort_array(F.collect_list(F.when(F.col("_rank") <= cap, F.col(value)))).alias(f"{value}s"),
        F.max("_rank").cast("long").alias(f"{value}Count"),
    )


def top_weighted(df: DataFrame, keys: tuple[str, ...], value: str, weight: str, n: int) -> DataFrame:
    """Per group: the ``n`` non-empty ``value``s with the largest total ``weight``.

    Ties break by value, so the result is deterministic. Columns: ``keys``, ``Top<value>s``.
    """
    totals = df.where(F.col(value) != F.lit("")).groupBy(*keys, value).agg(F.sum(weight).alias("_weight"))
    order = Window.partitionBy(*keys).orderBy(F.desc("_weight"), value)
    ranked = totals.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= n)
    return ranked.groupBy(*keys).agg(
        F.transform(F.sort_array(F.collect_list(F.struct("_rank", value))), lambda s: s[value]).alias(
            f"Top{value}s"
        )
    )


def facet(rows: DataFrame, which: int) -> DataFrame:
    """The rows of one facet, and the inbound rows, which carry every key and count in each."""
    return rows.where(F.col("Facet").isin(which, INBOUND_DETAIL))


def bit_count(words: list[str]) -> Column:
    """Number of bits set over the words (days of the window seen)."""
    return sum((F.bit_count(w) for w in words), start=F.lit(0)).cast("long")


def by_device(rows: DataFrame, group: tuple[str, ...] = SUMMARY_GROUP) -> DataFrame:
    """Per program and device: connections, first and last sighting, the days seen as words,
    the smallest non-empty file name and the protocols (the device facet's key holds them).

    The summary counts machines and device-days from it; ``unusual_programs`` its prevalence."""
    words = day_bit_columns(rows)
    return (
        facet(rows, DEVICE)
        .groupBy(*group, "DeviceId")
        .agg(
            F.sum("Connections").alias("Connections"),
            F.min("FirstSeen").alias("FirstSeen"),
            F.max("LastSeen").alias("LastSeen"),
            *(F.bit_or(w).alias(w) for w in words),
            F.min(F.when(F.col("FileName") != F.lit(""), F.col("FileName"))).alias("ExampleFileName"),
            F.collect_set(F.when(F.col("Protocol") != F.lit(""), F.col("Protocol"))).alias("Protocols"),
        )
    )


def summarize(
    rows: DataFrame,
    devices: DataFrame,
    cfg: PolicyConfig,
    window: tuple[dt.date, dt.date],
    group: tuple[str, ...] = SUMMARY_GROUP,
) -> DataFrame:
    """``summarize ConnectionCount = count(), DistinctMachines = dcount(DeviceId), Ports =
    makeset(Port), RemoteIPs = makeset(RemoteIP) by Directionality, AliasPath``.

    ``rows``: the aliased legs; ``devices``: ``by_device(rows, group)``. Columns: ``group``,
    then ``POLICY_COLUMNS`` after the group. ``makeset`` keeps at most 128 values in an
    undefined order; here sets are sorted and the kept values are the smallest, and
    ``PortCount``/``RemoteIPCount`` give the full distinct counts.

    Beyond the KQL columns, each row carries the evidence a reviewer weighs: first and last
    sighting, distinct days and device-days (Defender de-duplicates repeated connections, so
    these are sounder than ``ConnectionCount``), protocols, the top remote URLs of outbound
    traffic, an example file name and path, and the benign-traffic tags that matched.
    """
    words = day_bit_columns(devices)
    machines = F.count(F.lit(1)) if cfg.distinct_machines == "exact" else F.approx_count_distinct("DeviceId")
    main = (
        devices.groupBy(*group)
        .agg(
            F.sum("Connections").cast("long").alias("ConnectionCount"),
            machines.cast("long").alias("DistinctMachines"),
            F.sum(bit_count(words)).cast("long").alias("DeviceDays"),
            *(F.bit_or(w).alias(f"_all{w}") for w in words),
            F.min("FirstSeen").alias("FirstSeen"),
            F.max("LastSeen").alias("LastSeen"),
            F.min("ExampleFileName").alias("ExampleFileName"),
            # devices mostly repeat one set: gather each set once
            F.sort_array(F.array_distinct(F.flatten(F.collect_set("Protocols")))).alias("Protocols"),
        )
        .withColumn("DaysObserved", bit_count([f"_all{w}" for w in words]))
    )
    addresses = facet(rows, ADDRESS)
    # Ports are bounded (65,536 values), so they are gathered with the descriptors; remote IPs
    # are not, so they are ranked (capped_distinct).
    ports = F.sort_array(F.collect_set("Port"))
    described = addresses.groupBy(*group).agg(
        F.min(PATH).alias("ExamplePath"),
        F.sort_array(F.array_distinct(F.flatten(F.collect_set("Tags")))).alias("Tags"),
        F.slice(ports, 1, cfg.set_cap).alias("Ports"),
        F.size(ports).cast("long").alias("PortCount"),
    )
    outbound = addresses.where(F.col("Directionality") == F.lit(OUTBOUND))
    urls = top_weighted(outbound, group, "RemoteUrl", "Connections", TOP_URLS)
    ips = capped_distinct(addresses, group, "RemoteIP", cfg.set_cap)
    keys = list(group)
    start, end = window
    # eqNullSafe: Excluded is null for policy traffic, and null keys must still meet.
    return (
        _join(_join(_join(main, described, keys, "inner"), ips, keys, "inner"), urls, keys)
        .withColumn("TopRemoteUrls", F.coalesce(F.col("TopRemoteUrls"), F.array().cast("array<string>")))
        .withColumn("window_start", F.lit(start))
        .withColumn("window_end", F.lit(end))
        .select(*group, *(c for c in POLICY_COLUMNS if c not in group))
    )


def _join(left: DataFrame, right: DataFrame, keys: list[str], how: str = "left") -> DataFrame:
    """Join on ``keys`` where null equals null (``Excluded`` is null for policy traffic)."""
    r = right.select(*(F.col(k).alias(f"_r_{k}") for k in keys), *(c for c in right.columns if c not in keys))
    cond = [left[k].eqNullSafe(r[f"_r_{k}"]) for k in keys]
    return left.join(r, on=cond, how=how).drop(*(f"_r_{k}" for k in keys))


# ========================================================================= the query


@dataclass(frozen=True)
class SeedQuery:
    """The query over one window, each DataFrame built on the one before.

    ``conns``: the reduced table; ``rows``: the aliased legs; ``devices``: per program and
    device; ``summary``: the policy rows split by ``Excluded``. Every table a run writes reads
    these instead of the source.
    """

    cfg: PolicyConfig
    window: tuple[dt.date, dt.date]
    conns: DataFrame
    rows: DataFrame
    devices: DataFrame
    summary: DataFrame

    def policy(self) -> DataFrame:
        """``firewall_policy`` rows: the summary of traffic no exclude rule took."""
        return self.summary.where(F.col("Excluded").isNull()).drop("Excluded")

    def excluded(self) -> DataFrame:
        """``excluded_connections`` rows: the summary of each exclude rule's traffic, as the
        policy would have shown it; the rule's name is in ``Rule``."""
        rows = self.summary.where(F.col("Excluded").isNotNull())
        return rows.withColumnRenamed("Excluded", "Rule")


Keep = Callable[[DataFrame], DataFrame]


def lazily(df: DataFrame) -> DataFrame:
    """Keep nothing: each table recomputes what it reads (small inputs, tests)."""
    return df


def materialized(df: DataFrame) -> DataFrame:
    """Compute ``df`` now and keep its rows (memory, spilling to disk) under a plan of its own.

    A run does this at each step of the query: the tables after it read the kept rows, and
    Spark plans them without the steps before (the facets, the alias and address expressions
    are large, and every branch of the summary would otherwise analyse and optimise them
    again)."""
    return df.localCheckpoint(eager=True)


# A kept reduced table of at most this many rows is worked on as one partition (``kept_locally``).
ONE_PARTITION_ROWS = 1_000_000
ADAPTIVE = "spark.sql.adaptive.enabled"


def kept_locally(df: DataFrame) -> DataFrame:
    """``df`` computed on one partition and kept, known to Spark as one partition.

    After the reduction a small fleet's tables are small (a 2M-event window reduces to about
    a hundred thousand rows), and every step after it costs more in Spark's per-stage work than
    in rows: each exchange is a stage, each stage a job under adaptive execution. Rows kept on
    one partition that Spark knows as such (``SinglePartition``) are already clustered for
    every grouping and window over them, which then need no exchange. (A join of two such
    tables may still exchange them: Spark weighs that by size estimates, and a checkpoint
    inherits its plan's, far above the rows kept.) The checkpoint is planned without adaptive
    execution, whose plan does not carry its partitioning into the kept rows; with a single
    partition there is nothing for it to adapt.
    """
    with session_conf(df.sparkSession, ADAPTIVE, "false"):
        return df.coalesce(1).localCheckpoint(eager=True)


def from_connections(
    conns: DataFrame, cfg: PolicyConfig, window: tuple[dt.date, dt.date], keep: Keep = lazily
) -> SeedQuery:
    """Steps 2 to 6 over a reduced table (a run's, or the nightly's rolled-up blocks).

    ``keep`` is applied to the reduced table, the legs, the per-device rows and the summary,
    each of which several outputs read (``materialized`` in a run). A materialized reduced
    table of at most ``ONE_PARTITION_ROWS`` rows is then worked on as one partition
    (``kept_locally``); a larger one keeps Spark's partitioning. Its server keys are counted,
    so ``auto`` chooses their join before any rows move (``_join_hint``)."""
    conns = keep(conns)
    counted = None
    if keep is materialized:
        if conns.count() <= ONE_PARTITION_ROWS:  # a count of kept rows
            keep, conns = kept_locally, kept_locally(conns)
        if cfg.server_keys_join == "auto":  # a few keys: the join is chosen before rows move
            counted = server_keys(conns).count()
    # Every folder path of the legs is in the device facet: a few rows per program and device.
    rows = keep(with_alias(matched_rows(conns, cfg, counted), cfg, paths=facet(conns, DEVICE)))
    devices = keep(by_device(rows))
    return SeedQuery(cfg, window, conns, rows, devices, keep(summarize(rows, devices, cfg, window)))


def seed_query(
    events: DataFrame,
    cfg: PolicyConfig,
    window: tuple[dt.date, dt.date],
    excluded: Column | None = None,
    tags: Column | None = None,
    keep: Keep = lazily,
) -> SeedQuery:
    """Events of ``[start, end)`` -> the query. ``excluded``/``tags``: compiled rules."""
    tagged = where_clauses(events, cfg, excluded, tags)
    return from_connections(connection_table(tagged, window), cfg, window, keep)


def firewall_policy(events: DataFrame, cfg: PolicyConfig, start: dt.date, end: dt.date) -> DataFrame:
    """``firewall_policy`` rows of ``[start, end)``: ``seed_query(...).policy()``."""
    return seed_query(events, cfg, (start, end)).policy()
