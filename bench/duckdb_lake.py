"""DuckDB writing a benchmark lake: the yardstick for how long fwpolicy's generator takes.

``bench/run.py`` times fwpolicy's generator (Spark) writing each lake it builds. Whether that
figure is good depends on what writing that many rows of that shape costs on the machine, so
this script writes a lake of the same size and layout with DuckDB: the same number of rows
(``devices x days x events per device-day``, with the generator's row layout ``id = ((day *
devices) + device) * events_per_device_day + slot``), the same columns and types, Parquet with
Snappy (Spark's default codec), Hive-partitioned by ``EventDate``.

The columns come from ``--schema``, a JSON list of ``{"name", "type"}`` (DuckDB types) that
``bench/run.py`` writes from ``fwpolicy.tasks.generate.EVENT_SCHEMA``: this script imports no
pyspark, and a column added to the schema without a value here fails loudly instead of being
left out. Values are pseudo-random functions of a hash of the row id (or of the device for
per-device values), as in the generator: a program per event, its paths, ports, peers and host
names, so the strings have about the generator's lengths and cardinalities and Parquet's
dictionaries and compression do comparable work. The traffic is not meant to be realistic.

    python bench/duckdb_lake.py --schema SCHEMA.json --output DIR --devices 500 --days 90 \\
        --events-per-device-day 44
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb

USERS = ("a", "bob", "Alice", "jdoe", "JSmith", "maria.garcia", "Li.Wei", "KLee", "Administrator", "zoë")


class Program(NamedTuple):
    """A program of the yardstick fleet: a small cut of the generator's catalog."""

    path: str  # '{u}' is the device's user
    outbound: bool
    ports: tuple[int, ...]
    pool: int  # distinct remote addresses fleet-wide
    hosts: tuple[str, ...] = ()


PROGRAMS = (
    Program("C:\\Windows\\System32\\svchost.exe", False, (135, 445, 3389), 1),
    Program(
        "C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe",
        False,
        (1433,),
        1,
    ),
    Program(
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", True, (443, 80), 3000, ("github.com",)
    ),
    Program(
        "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
        True,
        (443, 80),
        2000,
        ("bing.com",),
    ),
    Program("C:\\Users\\{u}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe", True, (443, 3478), 400),
    Program("C:\\Users\\{u}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe", True, (443,), 200),
    Program(
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        True,
        (443,),
        300,
        ("outlook.com",),
    ),
    Program("C:\\Windows\\System32\\lsass.exe", True, (88, 389, 636), 6),
    Program(
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe",
        True,
        (443,),
        150,
    ),
    Program("/usr/sbin/sshd", False, (22,), 1),
    Program("/usr/bin/curl", True, (443, 80), 500, ("deb.debian.org",)),
)
OUTBOUND_ACTIONS = ("ConnectionSuccess", "ConnectionFound", "ConnectionRequest")
PUBLIC_FIRST_OCTETS = (13, 20, 23, 34, 35, 40, 52, 54, 104, 142, 151, 157, 185, 199, 204)
DAY_MICROS = 86_400 * 1_000_000


def sql_list(values: Sequence) -> str:
    """A DuckDB list literal of strings, numbers, booleans or nested sequences (constants of this file)."""
    items = []
    for v in values:
        if isinstance(v, str):
            items.append("'" + v.replace("'", "''") + "'")
        elif isinstance(v, (tuple, list)):
            items.append(sql_list(v) if v else "[]::VARCHAR[]")
        elif isinstance(v, bool):
            items.append("true" if v else "false")
        else:
            items.append(str(int(v)))
    return "[" + ", ".join(items) + "]"


def attribute(name: str) -> str:
    """The ``Program`` attribute ``name`` of the row's program (``prog``, 1-based)."""
    return f"{sql_list([getattr(p, name) for p in PROGRAMS])}[prog]"


def draws_sql(devices: int, days: int, per_day: int, seed: int) -> str:
    """Row id, day and device, and the hash draws the columns are made of.

    ``prog`` is the event's program; ``slot`` its peer in the program's pool, skewed (a few
    popular peers, a long tail) as in the generator; ``peer`` a hash of (program, slot), so an
    address repeats fleet-wide instead of being new on every row.
    """

    def below(key: str, salt: int, n: int | str) -> str:
        return f"(hash({key}, {seed}, {salt}) % {n})::BIGINT"

    return f"""
WITH ids AS (
    SELECT id, (id // {devices * per_day})::INTEGER AS day, (id // {per_day}) % {devices} AS device
    FROM range({devices * days * per_day}) r(id)
), draws AS (
    SELECT
        id, day, device,
        1 + {below("id", 1, len(PROGRAMS))} AS prog,
        {below("device // 5", 2, 5)} = device % 5 AS linux,
        1 + {below("device", 3, len(USERS))} AS user_no,
        {below("id", 4, 100)} AS pct,
        {below("id", 5, DAY_MICROS)} AS micros,
        {below("id", 6, 1 << 20)} AS bits,
        {below("id", 7, devices)} AS client,
        ({below("id", 8, 1 << 20)} / {1 << 20})::DOUBLE AS u_slot
    FROM ids
)
SELECT *, {below(f"prog, floor({attribute('pool')} * u_slot * u_slot)", 9, 1 << 32)} AS peer FROM draws
"""


def ipv4(a: str, b: str, c: str, d: str) -> str:
    return f"concat_ws('.', {a}, {b}, {c}, {d})"


def fleet_ip(index: str) -> str:
    """10.x.y.z address of fleet device ``index``, as the generator builds it."""
    return ipv4("10", f"16 + ({index} // 64000) % 200", f"({index} // 250) % 256", f"1 + {index} % 250")


def column_sql(seed: int, start: dt.date) -> dict[str, str]:
    """One DuckDB expression per EVENT_SCHEMA column, over the columns of ``draws_sql``."""
    outbound, ports, hosts = attribute("outbound"), attribute("ports"), attribute("hosts")
    files = sql_list([p.path.replace("/", "\\").rsplit("\\", 1)[-1] for p in PROGRAMS])
    port = f"{ports}[1 + (bits % len({ports}))::INTEGER]"
    ephemeral = "49152 + micros % 16384"
    start_us = int(dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    listen = f"(NOT {outbound} AND pct < 20)"
    folder = f"replace({attribute('path')}, '{{u}}', {sql_list(USERS)}[user_no])"
    public_ip = ipv4(
        f"{sql_list(PUBLIC_FIRST_OCTETS)}[1 + (peer % {len(PUBLIC_FIRST_OCTETS)})::INTEGER]",
        "(peer // 256) % 256",
        "(peer // 65536) % 256",
        "1 + (peer // 16777216) % 254",
    )
    return {
        "Timestamp": f"make_timestamp({start_us} + day * {DAY_MICROS}::BIGINT + micros)",
        "DeviceId": f"sha1('{seed}:' || device)",
        "DeviceName": "CASE WHEN linux THEN 'lnx-' ELSE 'desktop-' END || lpad(device::VARCHAR, 6, '0')",
        "ActionType": f"CASE WHEN {outbound} THEN {sql_list(OUTBOUND_ACTIONS)}[1 + pct % 3] "
        f"WHEN {listen} THEN 'ListeningConnectionCreated' ELSE 'InboundConnectionAccepted' END",
        "LocalIP": f"CASE WHEN {listen} THEN '0.0.0.0' ELSE {fleet_ip('device')} END",
        "LocalPort": f"CASE WHEN {outbound} THEN {ephemeral} ELSE {port} END",
        "RemoteIP": f"CASE WHEN {listen} THEN '' WHEN {outbound} THEN {public_ip} "
        f"ELSE {fleet_ip('client')} END",
        "RemotePort": f"CASE WHEN {listen} THEN 0 WHEN {outbound} THEN {port} ELSE {ephemeral} END",
        "RemoteIPType": f"CASE WHEN {listen} THEN '' WHEN {outbound} THEN 'Public' ELSE 'Private' END",
        "Protocol": "CASE WHEN pct < 10 THEN 'Udp' WHEN pct < 40 THEN 'TcpV4' ELSE 'Tcp' END",
        "InitiatingProcessFolderPath": folder,
        "InitiatingProcessFileName": f"{files}[prog]",
        "InitiatingProcessCommandLine": f"'\"' || {folder} || '\"' || CASE WHEN pct < 50 "
        "THEN ' --type=utility' ELSE '' END",
        "RemoteUrl": f"CASE WHEN {outbound} AND len({hosts}) > 0 AND pct < 60 "
        f"THEN {hosts}[1 + (peer % len({hosts}))::INTEGER] ELSE '' END",
        "EventDate": f"DATE '{start.isoformat()}' + day",
    }


def lake_sql(schema: list[dict], devices: int, days: int, per_day: int, seed: int, start: dt.date) -> str:
    """SELECT of the whole lake: the schema's columns, in its order, cast to its types."""
    expressions = column_sql(seed, start)
    missing = [c["name"] for c in schema if c["name"] not in expressions]
    if missing:
        raise SystemExit(f"duckdb_lake: no value for schema column(s) {', '.join(missing)}: add them here")
    columns = ",\n    ".join(
        f'CAST({expressions[c["name"]]} AS {c["type"]}) AS "{c["name"]}"' for c in schema
    )
    return f"SELECT\n    {columns}\nFROM ({draws_sql(devices, days, per_day, seed)})"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schema", required=True, type=Path, help="JSON list of {name, type} (run.py writes it)")
    p.add_argument("--output", required=True, type=Path, help="a directory that does not exist yet")
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--events-per-device-day", type=int, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 8, 1))
    p.add_argument("--partition-by", default="EventDate")
    p.add_argument("--threads", type=int, default=None, help="default: DuckDB's (all cores)")
    args = p.parse_args(argv)
    if args.output.exists():
        raise SystemExit(f"duckdb_lake: {args.output} exists; give a new directory")
    schema = json.loads(args.schema.read_text())
    began = time.monotonic()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if args.threads is not None:
        con.execute(f"SET threads = {int(args.threads)}")
    select = lake_sql(schema, args.devices, args.days, args.events_per_device_day, args.seed, args.start)
    target = str(args.output).replace("'", "''")
    partition = args.partition_by.replace('"', '""')
    con.execute(
        f"COPY ({select}) TO '{target}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (\"{partition}\"))"
    )
    rows = args.devices * args.days * args.events_per_device_day
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"duckdb lake: {rows} rows written in {time.monotonic() - began:.2f}s ({threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
