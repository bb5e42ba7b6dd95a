"""spark-submit entry point for the firewall-policy job.

    spark-submit --py-files dist/fwpolicy-*.whl \
        --packages io.delta:delta-spark_2.13:4.4.0 \
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
        jobs/firewall_policy.py \
        --source s3a://lake/dne --source-format delta --output s3a://lake/fwpolicy \
        --start 2026-08-01 --end 2026-11-01

``--packages`` per Spark line (``fwpolicy.io.session.CLUSTER_PACKAGES``; add the spark-avro
one only for ``ingest`` of Event Hubs Capture):

* Spark 4.2 (Scala 2.13): ``io.delta:delta-spark_2.13:4.4.0``,
  ``org.apache.spark:spark-avro_2.13:4.2.0``;
* Spark 3.5 (Scala 2.12): ``io.delta:delta-spark_2.12:3.3.2``,
  ``org.apache.spark:spark-avro_2.12:3.5.7``.

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
