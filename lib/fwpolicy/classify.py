"""Classify connections as the seed query does: server keys, inbound, outbound.

The KQL reads ``DeviceNetworkEvents`` three times (server keys, inbound leg, outbound leg). Here
the source is scanned once:

1. ``tag_directions`` applies the filters both legs share and tags each row with its leg. The
   legs are disjoint (inbound needs ``LocalPort < E``, outbound ``LocalPort >= E``).
2. ``aggregate_connections`` collapses repeated connections to one row per
   ``(Directionality, DeviceId, path, Port, RemoteIP)`` with a count, and notes whether any of
   them was a server action. Everything after works on this much smaller table.
3. ``match_server_keys`` keeps inbound rows whose ``(DeviceId, path, LocalPort)`` is a server
   key. The keys come from the same aggregate; ``pipeline.run`` persists that aggregate so the
   keys, the join and the summary all read it instead of the source.

The outbound leg's anti join against server keys is not performed: a server key has
``LocalPort < E`` and an outbound row has ``LocalPort >= E``, so no outbound row can ever match
it. ``tests/test_classify.py`` shows the join would remove nothing.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fwpolicy.config import PolicyConfig
from fwpolicy.kql import kql_startswith, kql_string
from fwpolicy.source import STRING_COLUMNS

SERVER_ACTIONS = ("InboundConnectionAccepted", "ListeningConnectionCreated")
OUTBOUND_ACTIONS = ("ConnectionSuccess", "ConnectionFound", "ConnectionRequest")
INBOUND_ACTIONS = (*SERVER_ACTIONS, *OUTBOUND_ACTIONS)
INBOUND, OUTBOUND = "Inbound", "Outbound"

PATH = "InitiatingProcessFolderPath"
CONNECTION_KEY = ("Directionality", "DeviceId", PATH, "Port", "RemoteIP")
SERVER_KEY = ("Directionality", "DeviceId", PATH, "Port")


def normalize_nulls(events: DataFrame) -> DataFrame:
    """KQL strings are never null: a missing string reads as ``''`` in every filter and key."""
    return events.withColumns({c: kql_string(c) for c in STRING_COLUMNS if c in events.columns})


def shared_filter() -> Column:
    """The clauses both legs (and the server keys) share, after ``normalize_nulls``."""
    return (
        (F.col("RemoteIPType") != F.lit("Loopback"))
        & (F.col("LocalIP") != F.col("RemoteIP"))
        & ~kql_startswith("RemoteIP", "169.254")
    )


def direction(cfg: PolicyConfig) -> Column:
    """'Inbound', 'Outbound', or null for a row that belongs to neither leg.

    ``isin`` is case-sensitive, as KQL's ``in`` is. A null port passes neither comparison,
    as a KQL ``where`` on null is false.
    """
    e = F.lit(cfg.ephemeral_start)
    action = F.col("ActionType")
    return F.when(action.isin(*INBOUND_ACTIONS) & (F.col("LocalPort") < e), F.lit(INBOUND)).when(
        action.isin(*OUTBOUND_ACTIONS) & (F.col("LocalPort") >= e), F.lit(OUTBOUND)
    )


def tag_directions(events: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """Rows of either leg, with ``Directionality``, ``Port`` and the ``RemoteIP`` to report."""
    tagged = events.where(shared_filter()).withColumn("Directionality", direction(cfg))
    inbound = F.col("Directionality") == F.lit(INBOUND)
    remote_ip = (
        F.col("RemoteIP")
        if cfg.include_inbound_remote_ips
        else F.when(inbound, F.lit("")).otherwise(F.col("RemoteIP"))
    )
    return tagged.where(F.col("Directionality").isNotNull()).select(
        "Directionality",
        "DeviceId",
        PATH,
        F.when(inbound, F.col("LocalPort")).otherwise(F.col("RemotePort")).alias("Port"),
        remote_ip.alias("RemoteIP"),
        (inbound & F.col("ActionType").isin(*SERVER_ACTIONS)).alias("ServerAction"),
    )


def aggregate_connections(tagged: DataFrame) -> DataFrame:
    """One row per distinct connection, with how many events it had.

    ``IsServer`` is true when a server action (listen or accept) was among them; only inbound
    rows can have it. ``Connections`` is a long, as KQL's ``count()`` is.
    """
    return tagged.groupBy(*CONNECTION_KEY).agg(
        F.count(F.lit(1)).alias("Connections"),
        F.max("ServerAction").alias("IsServer"),
    )


def server_keys(connections: DataFrame) -> DataFrame:
    """Distinct ``(Directionality, DeviceId, path, LocalPort)`` that listened or accepted."""
    return (
        connections.where(F.col("IsServer"))
        .select(*SERVER_KEY)
        .distinct()
        .withColumn("_server_key", F.lit(True))
    )


def match_server_keys(conns: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """Keep outbound rows and the inbound rows whose key is a server key (KQL ``leftsemi``).

    The semi join is written as a left join on ``SERVER_KEY`` (which includes
    ``Directionality``, so outbound rows never match) followed by a filter: one pass over the
    aggregate serves both legs. ``server_keys_join`` picks the plan: ``broadcast`` ships the
    keys to every task; ``shuffle`` forces a sort-merge join for key sets too large to
    broadcast (100k devices x tens of listeners); ``auto`` lets adaptive execution broadcast
    them when their measured size is under ``spark.sql.adaptive.autoBroadcastJoinThreshold``.
    """
    keys = server_keys(conns)
    if cfg.server_keys_join == "broadcast":
        keys = F.broadcast(keys)
    elif cfg.server_keys_join == "shuffle":
        keys = keys.hint("merge")
    joined = conns.join(keys, on=list(SERVER_KEY), how="left")
    keep = (F.col("Directionality") == F.lit(OUTBOUND)) | F.col("_server_key").isNotNull()
    return joined.where(keep).drop("_server_key", "IsServer")


def connections(events: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """Events -> distinct connections of either leg, before the server-key match.

    This is the one table built from the source; the nightly mode stores it per day.
    """
    return events.transform(normalize_nulls).transform(tag_directions, cfg).transform(aggregate_connections)
