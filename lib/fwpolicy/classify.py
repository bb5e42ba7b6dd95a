"""Classify connections as the seed query does: server keys, inbound, outbound.

The KQL reads ``DeviceNetworkEvents`` three times (server keys, inbound leg, outbound leg). Here
the source is scanned once:

1. ``tag_connections`` gives every event of the window its fate: the leg it belongs to
   (``Directionality``), or the first clause of the query that removes it (``Removed``), or the
   reason its values are unusable (``Removed = 'rejected:...'``). The legs are disjoint:
   inbound needs ``LocalPort < E``, outbound ``LocalPort >= E``.
2. ``aggregate_connections`` collapses repeated connections to one row per
   ``(EventDate, Directionality, DeviceId, path, Port, RemoteIP, Excluded)`` with a count and
   whether any of them was a server action. Removed events collapse to one row per day and
   reason, so the run audit can account for every row read without a second scan. This table
   is small next to the events; the nightly mode stores it per day.
3. ``match_server_keys`` keeps inbound rows whose ``(DeviceId, path, LocalPort)`` is a server
   key anywhere in the window. The keys come from the same table; ``pipeline.run`` persists it
   so the keys, the join and the summary all read it instead of the source.

The outbound leg's anti join against server keys is not performed: a server key has
``LocalPort < E`` and an outbound row has ``LocalPort >= E``, so no outbound row can ever match
it. ``tests/test_classify.py`` shows the join would remove nothing.
"""

from __future__ import annotations

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
CONNECTION_KEY = ("EventDate", "Directionality", "DeviceId", PATH, "Port", "RemoteIP", "Excluded", "Removed")
SERVER_KEY = ("Directionality", "DeviceId", PATH, "Port")


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


def _nonempty_set(c: str) -> Column:
    return F.collect_set(F.when(F.col(c) != F.lit(""), F.col(c)))


def aggregate_connections(tagged: DataFrame) -> DataFrame:
    """One row per distinct connection per day, with its event count and descriptors.

    ``IsServer`` is true when a server action (listen or accept) was among the events.
    ``Connections`` is a long, as KQL's ``count()`` is. Every aggregate here can be merged
    again (sum, min, max, set union), which is what lets nightly partials roll up exactly.
    """
    return tagged.groupBy(*CONNECTION_KEY).agg(
        F.count(F.lit(1)).alias("Connections"),
        F.max("ServerAction").alias("IsServer"),
        F.min("Timestamp").alias("FirstSeen"),
        F.max("Timestamp").alias("LastSeen"),
        F.min(F.when(F.col("FileName") != F.lit(""), F.col("FileName"))).alias("FileName"),
        _nonempty_set("Protocol").alias("Protocols"),
        _nonempty_set("RemoteUrl").alias("RemoteUrls"),
        F.array_distinct(F.flatten(F.collect_set("Tags"))).alias("Tags"),
    )


def connections(
    events: DataFrame, cfg: PolicyConfig, excluded: Column | None = None, tags: Column | None = None
) -> DataFrame:
    """Events of a window -> the connection table (kept rows of both legs, and removed counts)."""
    return aggregate_connections(tag_connections(normalize_nulls(events), cfg, excluded, tags))


def server_keys(conns: DataFrame) -> DataFrame:
    """Distinct ``(Directionality, DeviceId, path, LocalPort)`` that listened or accepted."""
    return (
        conns.where(F.col("IsServer")).select(*SERVER_KEY).distinct().withColumn("_server_key", F.lit(True))
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
