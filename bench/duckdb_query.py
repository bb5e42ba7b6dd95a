"""The seed KQL query translated to DuckDB SQL: the single-machine peer of the benchmark.

The translation follows the KQL text, not fwpolicy's plan: server keys, an inbound leg with a
semi join and an outbound leg with an anti join, each filtered as in the query, then one
``summarize``. KQL semantics that SQL does not share are spelled out (see DESIGN.md):

* strings are never null: each string column is ``coalesce(x, '')`` before any filter or key;
* ``startswith`` / ``contains`` ignore case (``lower()`` on both sides); ``in``, ``==``, ``!=``
  and join keys do not;
* ``substring`` / ``indexof`` are 0-based, count a negative start from the end and clamp
  (the ``kql_*`` macros below); ``strlen`` counts code points (DuckDB's ``length``);
* ``makeset`` keeps the 128 smallest distinct values, sorted, nulls dropped and ``''`` kept; the
  uncapped distinct counts come with them; ``dcount`` is an exact ``count(DISTINCT ...)``.

Known difference: DuckDB's ``lower`` folds U+0130 ('İ') to 'i' where Java and Python give 'i̇';
no simulated path contains it.

Command line (a fresh process, as the benchmark runs it; DuckDB's default threads):

    python bench/duckdb_query.py --source LAKE --start 2026-08-01 --end 2026-10-30 --output OUT.parquet
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence

import duckdb

SERVER_ACTIONS = ("InboundConnectionAccepted", "ListeningConnectionCreated")
OUTBOUND_ACTIONS = ("ConnectionSuccess", "ConnectionFound", "ConnectionRequest")
INBOUND_ACTIONS = (*SERVER_ACTIONS, *OUTBOUND_ACTIONS)
POLICY_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ConnectionCount",
    "DistinctMachines",
    "Ports",
    "RemoteIPs",
    "PortCount",
    "RemoteIPCount",
)

# KQL string functions on code points. kql_start: a negative start counts from the end, then 0.
MACROS = r"""
CREATE OR REPLACE MACRO kql_start(n, st) AS CASE WHEN st < 0 THEN greatest(n + st, 0) ELSE st END;
CREATE OR REPLACE MACRO kql_substring(s, st, ln) AS
    CASE WHEN kql_start(length(s), st) >= length(s) THEN ''
         ELSE substring(s, kql_start(length(s), st) + 1,
                        least(greatest(ln, 0), length(s) - kql_start(length(s), st)))
    END;
CREATE OR REPLACE MACRO kql_substring_rest(s, st) AS kql_substring(s, st, length(s));
CREATE OR REPLACE MACRO kql_indexof(s, lookup, st) AS
    CASE WHEN kql_start(length(s), st) > length(s) THEN -1
         WHEN strpos(substring(s, kql_start(length(s), st) + 1), lookup) = 0 THEN -1
         ELSE kql_start(length(s), st) + strpos(substring(s, kql_start(length(s), st) + 1), lookup) - 1
    END;
CREATE OR REPLACE MACRO kql_alias(p) AS lower(CASE
    WHEN starts_with(lower(p), 'c:\users\')
        THEN '%UserProfile%' || kql_substring(p, kql_indexof(p, '\', 11), length(p) - 11)
    WHEN starts_with(lower(p), 'c:\documents and settings\')
        THEN '%UserProfile%' || kql_substring(p, kql_indexof(p, '\', 27), length(p) - 27)
    WHEN contains(lower(p), ':\windows\') THEN '%windir%' || kql_substring_rest(p, 10)
    WHEN contains(lower(p), ':\programdata\') THEN '%programdata%' || kql_substring_rest(p, 14)
    WHEN contains(lower(p), ':\program files\') THEN '%ProgramFiles%' || kql_substring_rest(p, 16)
    WHEN contains(lower(p), ':\program files (x86)\') THEN '%ProgramFilesx86%' || kql_substring_rest(p, 22)
    ELSE p
END);
"""


def _in(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def policy_sql(ephemeral_start: int = 49152, cap: int = 128) -> str:
    """The query over ``events`` (a view of the window's rows).

    ``ephemeral_start`` and ``cap`` are integers checked here, never user text.
    """
    e, cap = int(ephemeral_start), int(cap)
    shared = (
        "RemoteIPType != 'Loopback' AND LocalIP != RemoteIP AND NOT starts_with(lower(RemoteIP), '169.254')"
    )
    return f"""
WITH ServerConnections AS (
    SELECT DISTINCT DeviceId, FolderPath, LocalPort FROM events
    WHERE ActionType IN ({_in(SERVER_ACTIONS)}) AND {shared} AND LocalPort < {e}
),
Inbound AS (
    SELECT 'Inbound' AS Directionality, DeviceId, FolderPath, LocalPort AS Port, '' AS RemoteIP
    FROM events SEMI JOIN ServerConnections USING (DeviceId, FolderPath, LocalPort)
    WHERE ActionType IN ({_in(INBOUND_ACTIONS)}) AND {shared} AND LocalPort < {e}
),
Outbound AS (
    SELECT 'Outbound' AS Directionality, DeviceId, FolderPath, RemotePort AS Port, RemoteIP
    FROM events ANTI JOIN ServerConnections USING (DeviceId, FolderPath, LocalPort)
    WHERE ActionType IN ({_in(OUTBOUND_ACTIONS)}) AND {shared} AND LocalPort >= {e}
),
Legs AS (
    SELECT Directionality, kql_alias(FolderPath) AS AliasPath, DeviceId, Port, RemoteIP FROM Inbound
    UNION ALL
    SELECT Directionality, kql_alias(FolderPath) AS AliasPath, DeviceId, Port, RemoteIP FROM Outbound
)
SELECT
    Directionality,
    AliasPath,
    count(*) AS ConnectionCount,
    count(DISTINCT DeviceId) AS DistinctMachines,
    list_slice(list_sort(list(DISTINCT Port) FILTER (WHERE Port IS NOT NULL)), 1, {cap}) AS Ports,
    list_slice(list_sort(list(DISTINCT RemoteIP)), 1, {cap}) AS RemoteIPs,
    count(DISTINCT Port) AS PortCount,
    count(DISTINCT RemoteIP) AS RemoteIPCount
FROM Legs
GROUP BY Directionality, AliasPath
"""


def events_view_sql(source: str, start: dt.date, end: dt.date) -> str:
    """The window ``[start, end)`` of a Hive-partitioned Parquet lake, strings never null.

    Like fwpolicy's reader, the ``EventDate`` partition filter is a day wider on each side and
    the ``Timestamp`` filter is the exact one.
    """
    lo_p, hi_p = start - dt.timedelta(days=1), end + dt.timedelta(days=1)
    glob = source.rstrip("/").replace("'", "''") + "/**/*.parquet"
    return f"""
CREATE OR REPLACE TEMP VIEW events AS
SELECT
    coalesce(DeviceId, '') AS DeviceId,
    coalesce(ActionType, '') AS ActionType,
    coalesce(LocalIP, '') AS LocalIP,
    coalesce(RemoteIP, '') AS RemoteIP,
    coalesce(RemoteIPType, '') AS RemoteIPType,
    coalesce(InitiatingProcessFolderPath, '') AS FolderPath,
    LocalPort,
    RemotePort
FROM read_parquet('{glob}', hive_partitioning = true)
WHERE EventDate BETWEEN DATE '{lo_p.isoformat()}' AND DATE '{hi_p.isoformat()}'
  AND Timestamp >= TIMESTAMP '{start.isoformat()} 00:00:00'
  AND Timestamp < TIMESTAMP '{end.isoformat()} 00:00:00'
"""


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the KQL macros, in UTC (default threads unless told)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(MACROS)
    return con


def policy_rows(
    con: duckdb.DuckDBPyConnection, source: str, start: dt.date, end: dt.date, ephemeral_start: int = 49152
) -> list[dict]:
    """The policy rows of a lake's window as dicts (small: one row per program and direction)."""
    con.execute(events_view_sql(source, start, end))
    cur = con.execute(policy_sql(ephemeral_start))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="Hive-partitioned Parquet lake (EventDate=...)")
    p.add_argument("--start", required=True, type=dt.date.fromisoformat)
    p.add_argument("--end", required=True, type=dt.date.fromisoformat)
    p.add_argument("--output", required=True, help="Parquet file for the result")
    p.add_argument("--threads", type=int, default=None, help="default: DuckDB's (all cores)")
    args = p.parse_args(argv)
    began = time.monotonic()
    con = connect(args.threads)
    con.execute(events_view_sql(args.source, args.start, args.end))
    out = args.output.replace("'", "''")
    con.execute(f"COPY ({policy_sql()}) TO '{out}' (FORMAT parquet)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"duckdb: {rows} rows in {time.monotonic() - began:.2f}s ({threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
