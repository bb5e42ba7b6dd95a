"""The evidence columns beyond the KQL query, against values computed here from the events.

Days are kept as bit words of 64 days (``seed.day_bits``), so the window spans more than one
word and events sit on both sides of the boundary. Every shape of the reduced table is checked:
a run's (days as words), daily partials rolled up, and the nightly's blocks of 1, 8 and 64 days
rolled up (the window's 64-day block starts 6 days in, so its word straddles the boundary).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import PolicyConfig
from fwpolicy.query.seed import (
    connection_table,
    firewall_policy,
    from_connections,
    where_clauses,
)
from fwpolicy.tasks.nightly import (
    BLOCK_DAYS,
    BLOCK_START,
    DAY_COLUMN,
    blocks_of,
    build_blocks,
    day_blocks,
    roll_up,
)

from helpers import EVENT_FIELDS, event

START = dt.date(2026, 8, 1)
END = START + dt.timedelta(days=90)
CHROME = r"C:\Program Files\Google\Chrome\Application\chrome.exe"
TOOL = r"C:\Tools\sync.exe"


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(START + dt.timedelta(days=day), dt.time(hour))


# (device, day index in the window, path, file name, protocol, remote URL)
OUTBOUND = [
    ("d1", 0, CHROME, "chrome.exe", "Tcp", "a.example.com"),
    ("d1", 0, CHROME, "chrome.exe", "TcpV4", "a.example.com"),
    ("d1", 63, CHROME, "chrome.exe", "Tcp", "b.example.com"),
    ("d1", 64, CHROME, "chrome.exe", "Tcp", "a.example.com"),
    ("d2", 64, CHROME, "chrome.exe", "Udp", ""),
    ("d2", 89, CHROME, "chrome.exe", "Tcp", "c.example.com"),
    ("d2", 89, CHROME, "chrome.exe", "Tcp", "c.example.com"),
    ("d3", 5, TOOL, "", "", "x.example.org"),
    ("d3", 70, TOOL, "sync.exe", "Tcp", ""),
]


def rows() -> list[dict]:
    return [
        event(
            DeviceId=device,
            Timestamp=at(day, 8 + i % 10),
            InitiatingProcessFolderPath=path,
            InitiatingProcessFileName=name,
            Protocol=protocol,
            RemoteUrl=url,
            RemoteIP=f"20.0.0.{i}",
            LocalPort=50000 + i,
        )
        for i, (device, day, path, name, protocol, url) in enumerate(OUTBOUND)
    ]


def expected() -> dict[str, dict]:
    """Per folder path (each its own alias here): the columns, from the list above."""
    by_path: dict[str, list[tuple]] = defaultdict(list)
    for i, (device, day, path, name, protocol, url) in enumerate(OUTBOUND):
        by_path[path].append((device, day, name, protocol, url, at(day, 8 + i % 10)))
    out = {}
    for path, evs in by_path.items():
        urls = Counter(u for *_, u, _ in evs if u)
        out[path] = {
            "DaysObserved": len({d for _, d, *_ in evs}),
            "DeviceDays": len({(dev, d) for dev, d, *_ in evs}),
            "DistinctMachines": len({dev for dev, *_ in evs}),
            "FirstSeen": min(t for *_, t in evs),
            "LastSeen": max(t for *_, t in evs),
            "Protocols": sorted({p for _, _, _, p, _, _ in evs if p}),
            "TopRemoteUrls": [u for u, _ in sorted(urls.items(), key=lambda kv: (-kv[1], kv[0]))][:5],
            "ExampleFileName": min((n for _, _, n, *_ in evs if n), default=None),
            "ExamplePath": path,
        }
    return out


COLUMNS = list(next(iter(expected().values())))


def by_path(df) -> dict[str, dict]:
    got = df.where(F.col("Directionality") == "Outbound").select("ExamplePath", *COLUMNS).collect()
    return {r["ExamplePath"]: {c: r[c] for c in COLUMNS} for r in got}


@pytest.fixture(scope="module")
def events(spark):
    fields = (*EVENT_FIELDS, ("Protocol", T.StringType()), ("RemoteUrl", T.StringType()))
    schema = T.StructType([T.StructField(n, t) for n, t in fields])
    return spark.createDataFrame([tuple(r.get(n) for n, _ in fields) for r in rows()], schema)


def test_run_shape_matches_the_events(events):
    assert by_path(firewall_policy(events, PolicyConfig(), START, END)) == expected()


def test_daily_partials_rolled_up_match_the_events(events):
    cfg = PolicyConfig()
    daily = connection_table(where_clauses(events, cfg))  # EventDate in every row
    ones = day_blocks(daily.where(F.col(DAY_COLUMN).isNotNull()), "digest")  # only one-day blocks
    rolled = roll_up(ones, START, END)
    assert by_path(from_connections(rolled, cfg, (START, END)).policy()) == expected()


@pytest.mark.slow  # builds 8- and 64-day blocks: the suite's time budget (test_nightly rolls up too)
def test_nightly_blocks_rolled_up_match_the_events(spark, events):
    cfg = PolicyConfig()
    daily = connection_table(where_clauses(events, cfg))
    ones = day_blocks(daily.where(F.col(DAY_COLUMN).isNotNull()), "digest")  # as the nightly stores days
    eights = build_blocks(ones, 8, "digest")
    sixty_fours = build_blocks(eights, 64, "digest")
    window = blocks_of(START, END)
    assert {n for _, n in window} == {1, 8, 64}
    wanted = spark.createDataFrame(window, f"{BLOCK_START} date, {BLOCK_DAYS} int")
    blocks = ones.unionByName(eights).unionByName(sixty_fours).join(wanted, [BLOCK_START, BLOCK_DAYS])
    # Days without events have no rows; the 64-day block and one 8-day block hold events.
    held = {n for r in blocks.select(BLOCK_DAYS).distinct().collect() for n in r}
    assert held == {1, 8, 64}
    rolled = roll_up(blocks, START, END)  # what the nightly's roll-up reads
    assert by_path(from_connections(rolled, cfg, (START, END)).policy()) == expected()
