"""Classify connections as the seed query does: server keys, inbound, outbound.

The KQL reads ``DeviceNetworkEvents`` three times (server keys, inbound leg, outbound leg). Here
the source is scanned once:

1. ``tag_connections`` gives every event of the window its fate: the leg it belongs to
   (``Directionality``), or the first clause of the query that removes it (``Removed``), or the
   reason its values are unusable (``Removed = 'rejected:...'``). The legs are disjoint:
   inbound needs ``LocalPort < E``, outbound ``LocalPort >= E``.
2. ``aggregate_connections`` counts every event in a few *facets*, each grouped as coarsely as
   the summary allows: an outbound event per program and device (``DEVICE``: counts, times,
   days seen as bit words), per program, port and remote IP (``ADDRESS``), and per program,
   file name, protocol, URL and tags (``DESCRIPTOR``); an inbound event once with all of
   them and its ``(DeviceId, LocalPort)`` for the semi join (``INBOUND_DETAIL``). Removed
   events collapse to one ``DEVICE`` row per reason, so the run audit accounts for every row
   read without a second scan. This *connection table* is the only large aggregation of the
   job (one scan, one hash aggregation); it is far smaller than the events even when no
   connection repeats, and the nightly mode stores it per day.
3. ``match_server_keys`` keeps inbound rows whose ``(DeviceId, path, LocalPort)`` is a server
   key anywhere in the window. The keys come from the same table; ``pipeline.run`` persists it
   so the keys, the join and the summary all read it instead of the source.

The outbound leg's anti join against server keys is not performed: a server key has
``LocalPort < E`` and an outbound row has ``LocalPort >= E``, so no outbound row can ever match
it. ``tests/test_classify.py`` shows the join would remove nothing.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fwpolicy.config import PolicyConfig
from fwpolicy.kql import kql_startswith, kql_string
from fwpolicy.source import OPTIONAL_STRING_COLUMNS, STRING_COLUMNS

SERVER_ACTIONS = ("InboundConnectionAccepted", "ListeningConnectionCreated")
OUTBOUND_ACTIONS = ("ConnectionSuccess", "ConnectionFound", "ConnectionRequest")
INBOUND_ACTIONS = (*SERVER_ACTIONS, *OUTBOUND_ACTIONS)
INBOUND, OUTBOUND = "Inbound", "Outbound"

PATH = "InitiatingProcessFolderPath"
# Clauses of the query's `where`, in the order a removed row is attributed to them.
REMOVAL_CLAUSES = ("loopback", "local_equals_remote", "link_local", "action_type", "port_range")
SERVER_KEY = ("Directionality", "DeviceId", PATH, "Port")
# The connection table's key columns (``aggregate_connections``); each facet keeps some of them.
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
# Values of the connection table's Facet column (see aggregate_connections).
DEVICE, ADDRESS, DESCRIPTOR, INBOUND_DETAIL = 0, 1, 2, 3
PROGRAM = ("Directionality", PATH, "Excluded")
FACETS = {
    DEVICE: (*PROGRAM, "DeviceId"),
    ADDRESS: (*PROGRAM, "Port", "RemoteIP"),
    DESCRIPTOR: (*PROGRAM, "FileName", "Protocol", "RemoteUrl", "Tags"),
    INBOUND_DETAIL: tuple(c for c in KEY_COLUMNS if c != "EventDate"),
}
DAY_BITS = "DayBits"  # DayBits0, DayBits1, ...: days of the window seen (see day_bits)


def normalize_nulls(events: DataFrame) -> DataFrame:
    """KQL strings are never null: a missing string reads as ``''`` in every filter and key."""
    names = [c for c in (*STRING_COLUMNS, *OPTIONAL_STRING_COLUMNS) if c in events.columns]
    return events.withColumns({c: kql_string(c) for c in names})


def ephemeral_start(cfg: PolicyConfig) -> Column:
    """First port of the ephemeral range for each row (per OS under profile ``normalized``)."""
    if cfg.profile == "normalized":
        from fwpolicy.normalized import ephemeral_start_expr

        return ephemeral_start_expr(PATH, cfg)
    return F.lit(cfg.ephemeral_start)


def direction(cfg: PolicyConfig) -> Column:
    """'Inbound', 'Outbound', or null for a row that belongs to neither leg.

    ``isin`` is case-sensitive, as KQL's ``in`` is. A null port passes neither comparison,
    as a KQL ``where`` on null is false.
    """
    e = ephemeral_start(cfg)
    action = F.col("ActionType")
    return F.when(action.isin(*INBOUND_ACTIONS) & (F.col("LocalPort") < e), F.lit(INBOUND)).when(
        action.isin(*OUTBOUND_ACTIONS) & (F.col("LocalPort") >= e), F.lit(OUTBOUND)
    )


def removal_reason() -> Column:
    """The first clause of the query's ``where`` that removes a row, or null if none does.

    Evaluated after ``direction``: a row with a valid action but in neither leg fails the
    port-range clause. ``Rejected`` (unusable values, from the schema contract) comes first.
    """
    return (
        F.when(F.col("Rejected").isNotNull(), F.concat(F.lit("rejected:"), F.col("Rejected")))
        .when(F.col("RemoteIPType") == F.lit("Loopback"), F.lit("loopback"))
        .when(F.col("LocalIP") == F.col("RemoteIP"), F.lit("local_equals_remote"))
        .when(kql_startswith("RemoteIP", "169.254"), F.lit("link_local"))
        .when(~F.col("ActionType").isin(*INBOUND_ACTIONS), F.lit("action_type"))
        .when(F.col("Directionality").isNull(), F.lit("port_range"))
    )


def _optional(events: DataFrame, name: str) -> Column:
    return F.col(name) if name in events.columns else F.lit("")


def tag_connections(
    events: DataFrame,
    cfg: PolicyConfig,
    excluded: Column | None = None,
    tags: Column | None = None,
) -> DataFrame:
    """Each event's fate and the columns its connection is keyed and described by.

    ``excluded`` (rule name or null) and ``tags`` (array of rule names) come from the
    benign-traffic rules (``fwpolicy.exclusions``); they never change which rows KQL keeps.
    """
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

    no_tags = F.array().cast("array<string>")
    return tagged.select(
        F.to_date("Timestamp").alias("EventDate"),
        key(F.col("Directionality")).alias("Directionality"),
        key(F.col("DeviceId")).alias("DeviceId"),
        key(F.col(PATH)).alias(PATH),
        key(F.when(inbound, F.col("LocalPort")).otherwise(F.col("RemotePort"))).alias("Port"),
        key(remote_ip).alias("RemoteIP"),
        key(excluded if excluded is not None else F.lit(None).cast("string")).alias("Excluded"),
        F.col("Removed"),
        (kept & inbound & F.col("ActionType").isin(*SERVER_ACTIONS)).alias("ServerAction"),
        F.col("Timestamp"),
        key(_optional(tagged, "InitiatingProcessFileName")).alias("FileName"),
        key(_optional(tagged, "Protocol")).alias("Protocol"),
        key(_optional(tagged, "RemoteUrl")).alias("RemoteUrl"),
        F.when(kept, tags if tags is not None else no_tags).otherwise(no_tags).alias("Tags"),
    )


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


def _facet(facet: int, daily: bool, types: dict[str, str]) -> Column:
    """One facet of an event as a struct of every key column (null where not in the facet)."""
    keep = set(FACETS[facet]) | {"Removed"} | ({"EventDate"} if daily else set())
    fields = [F.lit(facet).cast("tinyint").alias("Facet")]
    for name in KEY_COLUMNS:
        value = F.col(name) if name in keep else F.lit(None).cast(types[name])
        fields.append(value.alias(name))
    return F.struct(*fields)


def aggregate_connections(tagged: DataFrame, window: tuple[dt.date, dt.date] | None = None) -> DataFrame:
    """The connection table: every event counted once in each facet of its kind (``FACETS``).

    An outbound event is counted in three facets, each as coarse as the summary allows:

    * ``DEVICE``: per program and device: counts, first and last sighting; the days seen as
      ``DayBits<w>`` words over ``window``;
    * ``ADDRESS``: per program, port and remote IP;
    * ``DESCRIPTOR``: per program, file name, protocol, remote URL and tags.

    An inbound event is counted once, in ``INBOUND_DETAIL``, with every key column: it must
    keep its server key ``(DeviceId, path, LocalPort)`` for the semi join, and the branches of
    the summary read it as a row of each facet (``summarize.facet``). ``IsServer`` says
    whether a server action (listen or accept) was among its events. A removed event is
    counted in ``DEVICE`` only, one row per reason (and day), so every event read is counted
    exactly once in ``DEVICE`` or ``INBOUND_DETAIL`` (what the run audit sums).

    The table is far smaller than the events even when no connection repeats. Grouping only
    on keys with count, min, max and bit-or keeps this, the job's one large aggregation, a
    hash aggregation (it spills instead of sorting). ``window=None`` keeps ``EventDate`` in
    every facet instead of day words: the nightly partials, one set of rows per day, which
    roll up over a window that moves. Every aggregate merges again (sum, min, max, bit-or),
    so partials roll up exactly.
    """
    daily = window is None
    types = dict(tagged.dtypes)
    device = _facet(DEVICE, daily, types)
    facets = (
        F.when(F.col("Removed").isNotNull(), F.array(device))
        .when(F.col("Directionality") == F.lit(INBOUND), F.array(_facet(INBOUND_DETAIL, daily, types)))
        .otherwise(F.array(device, _facet(ADDRESS, daily, types), _facet(DESCRIPTOR, daily, types)))
    )
    bits = {} if daily else day_bits(F.col("EventDate"), *window)
    exploded = tagged.select(
        F.explode(facets).alias("_f"), "ServerAction", "Timestamp", *(c.alias(n) for n, c in bits.items())
    )
    rows = exploded.select("_f.*", "ServerAction", "Timestamp", *bits)
    return rows.groupBy("Facet", *KEY_COLUMNS).agg(
        F.count(F.lit(1)).alias("Connections"),
        F.max("ServerAction").alias("IsServer"),
        F.min("Timestamp").alias("FirstSeen"),
        F.max("Timestamp").alias("LastSeen"),
        *(F.bit_or(name).alias(name) for name in bits),
    )


def roll_up_days(partials: DataFrame, start: dt.date, end: dt.date) -> DataFrame:
    """Daily partials (``aggregate_connections`` without a window) of ``[start, end)`` -> the
    connection table a run over that window builds: the days become ``DayBits`` words and
    ``EventDate`` leaves the key, so the summary reads as few rows as after a full run."""
    bits = day_bits(F.col("EventDate"), start, end)
    rows = partials.withColumns(bits).withColumn("EventDate", F.lit(None).cast("date"))
    return rows.groupBy("Facet", *KEY_COLUMNS).agg(
        F.sum("Connections").alias("Connections"),
        F.max("IsServer").alias("IsServer"),
        F.min("FirstSeen").alias("FirstSeen"),
        F.max("LastSeen").alias("LastSeen"),
        *(F.bit_or(name).alias(name) for name in bits),
    )


def connections(
    events: DataFrame,
    cfg: PolicyConfig,
    excluded: Column | None = None,
    tags: Column | None = None,
    window: tuple[dt.date, dt.date] | None = None,
) -> DataFrame:
    """Events of a window -> the connection table (kept rows of both legs, and removed counts).

    ``window``: the run's ``[start, end)``; ``None`` for daily partials (``aggregate_connections``)."""
    return aggregate_connections(tag_connections(normalize_nulls(events), cfg, excluded, tags), window)


def server_keys(conns: DataFrame) -> DataFrame:
    """Distinct ``(Directionality, DeviceId, path, LocalPort)`` that listened or accepted."""
    return (
        conns.where((F.col("Facet") == F.lit(INBOUND_DETAIL)) & F.col("IsServer"))
        .select(*SERVER_KEY)
        .distinct()
        .withColumn("_server_key", F.lit(True))
    )


def match_server_keys(conns: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """Kept rows of the outbound leg, and inbound rows whose key is a server key (KQL ``leftsemi``).

    The semi join is written as a left join on ``SERVER_KEY`` (which includes
    ``Directionality``, so outbound rows never match) followed by a filter: one pass over the
    table serves both legs. ``server_keys_join`` picks the plan: ``broadcast`` ships the keys
    to every task; ``shuffle`` forces a sort-merge join for key sets too large to broadcast
    (100k devices x tens of listeners); ``auto`` lets adaptive execution broadcast them when
    their measured size is under ``spark.sql.adaptive.autoBroadcastJoinThreshold``.
    """
    kept = conns.where(F.col("Removed").isNull())
    keys = server_keys(kept)
    if cfg.server_keys_join == "broadcast":
        keys = F.broadcast(keys)
    elif cfg.server_keys_join == "shuffle":
        keys = keys.hint("merge")
    joined = kept.join(keys, on=list(SERVER_KEY), how="left")
    keep = (F.col("Directionality") == F.lit(OUTBOUND)) | F.col("_server_key").isNotNull()
    return joined.where(keep).drop("_server_key", "IsServer", "Removed")
