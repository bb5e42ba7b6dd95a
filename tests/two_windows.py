"""Two windows of a small fleet with hostile values, written by two runs, shared by the tests of
``policy_changes``/``diff`` and of the HTML report (one pair of runs for both).

Paths, file names and URLs carry ``<script>``, ``" onerror=`` and ``javascript:`` payloads. The
windows are ``[08-01, 08-03)`` and ``[08-02, 08-06)``: between them a program is new (``NEW``),
one is gone (``OLD``), one gains a port (8443), and two run on fewer machines.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.cli import main

from helpers import EVENT_SCHEMA, event

DAY1 = dt.datetime(2026, 8, 1, 12)
DAY5 = dt.datetime(2026, 8, 5, 12)
MARK = "window.__pwned = 1"
PAYLOADS = [
    rf"C:\Users\Public\<script>{MARK}</script>\a.exe",
    rf'C:\Tools\x" onerror="{MARK}" y\b.exe',
    rf"C:\Tools\<img src=x onerror={MARK}>\c.exe",
    r"C:\Program Files\App\app.exe",
]
NEW = rf"C:\New\<svg onload={MARK}>\n.exe"  # only in the second window
OLD = r"C:\Old\old.exe"  # only in the first
URLS = [
    f"javascript:{MARK}",
    f'"><svg onload="{MARK}">',
    "www.example.com",
    f"</script><script>{MARK}</script>",
]
WINDOWS = (("2026-08-01", "2026-08-03"), ("2026-08-02", "2026-08-06"))
FIRST_END, SECOND_END = dt.date(2026, 8, 3), dt.date(2026, 8, 6)


def events(when: dt.datetime) -> list[dict]:
    """Four devices running each payload program (device 0 on port 4444, the others on 443)."""
    rows = []
    for d in range(4):
        for i, path in enumerate(PAYLOADS):
            rows.append(
                event(
                    Timestamp=when,
                    DeviceId=f"dev-{d}",
                    InitiatingProcessFolderPath=path,
                    InitiatingProcessFileName=f'"><b onmouseover="{MARK}">{i}.exe',
                    RemoteIP=f"20.0.0.{i + d}",
                    RemotePort=443 if d else 4444,
                    RemoteUrl=URLS[i],
                )
            )
    return rows


def build(spark: SparkSession, root: Path) -> tuple[Path, Path]:
    """Write the lake under ``root`` and run both windows into ``root/out``: (lake, output)."""
    lake, out = root / "lake", root / "out"
    later = events(DAY5)[:10]  # devices 0 and 1 run every program, device 2 two of them
    later[5]["RemotePort"] = 8443  # dev-1's b.exe: a port the first window did not see
    rows = [
        *events(DAY1),
        event(Timestamp=DAY1, DeviceId="dev-0", InitiatingProcessFolderPath=OLD),
        *later,
        event(Timestamp=DAY5, DeviceId="dev-9", InitiatingProcessFolderPath=NEW),
    ]
    schema = T.StructType([*EVENT_SCHEMA.fields, T.StructField("RemoteUrl", T.StringType())])
    df = spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)
    df.withColumn("EventDate", F.to_date("Timestamp")).write.partitionBy("EventDate").parquet(str(lake))
    for start, end in WINDOWS:
        argv = ["-q", "run", "--source", str(lake), "--source-format", "parquet", "--output", str(out)]
        assert main([*argv, "--start", start, "--end", end]) == 0
    return lake, out
