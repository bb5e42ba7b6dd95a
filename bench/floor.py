"""The floor of the benchmark: Spark reading the columns the query needs, for the window, once.

No job can beat a scan of its input. This is that scan, in a fresh process with fwpolicy's session
settings: the window's date partitions, the needed columns decoded, rows consumed by the ``noop``
sink. A run within 2x of it spends most of its time reading, not computing.

    python bench/floor.py --source LAKE --start 2026-08-01 --end 2026-10-30
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence

from pyspark.sql import functions as F


def main(argv: Sequence[str] | None = None) -> int:
    from fwpolicy.io.session import get_spark
    from fwpolicy.io.source import REQUIRED_COLUMNS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="Hive-partitioned Parquet lake (EventDate=...)")
    p.add_argument("--start", required=True, type=dt.date.fromisoformat)
    p.add_argument("--end", required=True, type=dt.date.fromisoformat)
    args = p.parse_args(argv)
    began = time.monotonic()
    spark = get_spark("fwpolicy-floor")
    ready = time.monotonic()
    lo = dt.datetime.combine(args.start, dt.time(), tzinfo=dt.timezone.utc)
    hi = dt.datetime.combine(args.end, dt.time(), tzinfo=dt.timezone.utc)
    one_day = dt.timedelta(days=1)
    window = (
        F.col("EventDate").between(args.start - one_day, args.end + one_day)
        & (F.col("Timestamp") >= F.lit(lo))
        & (F.col("Timestamp") < F.lit(hi))
    )
    scan = spark.read.parquet(args.source).where(window).select(*REQUIRED_COLUMNS)
    scan.write.format("noop").mode("overwrite").save()
    done = time.monotonic()
    print(f"floor: session {ready - began:.2f}s, scan {done - ready:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
