"""Write one benchmark lake with fwpolicy's generator: Parquet, partitioned by ``EventDate``.

python bench/make_lake.py --output bench/lake-wide-20M --devices 5000 --days 90 --events-per-device-day 44
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from fwpolicy.io.session import get_spark
    from fwpolicy.tasks.generate import generate_events, write_lake

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--events-per-device-day", type=int, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 8, 1))
    args = p.parse_args(argv)
    began = time.monotonic()
    spark = get_spark("fwpolicy-bench-lake")
    df = generate_events(
        spark,
        args.devices,
        args.days,
        seed=args.seed,
        start=args.start,
        events_per_device_day=args.events_per_device_day,
    )
    write_lake(df, args.output, "parquet")
    print(f"lake: {args.output} written in {time.monotonic() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
