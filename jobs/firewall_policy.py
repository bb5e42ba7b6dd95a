"""spark-submit entry point for the firewall-policy job.

    spark-submit --py-files dist/fwpolicy-*.whl jobs/firewall_policy.py \
        --source s3a://lake/dne --source-format delta --output s3a://lake/fwpolicy \
        --start 2026-08-01 --end 2026-11-01

Takes the options of ``python -m fwpolicy run``; the master, the jars and the resources come
from spark-submit, never from here.
"""

from __future__ import annotations

import sys

from fwpolicy.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        args = args[1:]
    return cli_main(["run", *args])


if __name__ == "__main__":
    sys.exit(main())
