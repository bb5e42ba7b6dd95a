"""One place that builds a SparkSession.

A job never hard-codes a master or jars: under ``spark-submit`` (or on Databricks, EMR, Synapse)
the session already exists or is configured by the launcher, and we only ``getOrCreate`` it.
Run from a plain ``python`` process, we build an embedded ``local[*]`` session with Delta Lake.

The embedded JVM maps the class archive that ``make run`` and ``make bench`` build
(``io.class_archive``).

Delta's jars are found in this order, so that a fresh machine needs nobody:
1. ``FWPOLICY_DELTA_JARS``: a comma-separated list of jar paths;
2. the jars ``make setup`` fetched with Maven into ``~/.cache/fwpolicy/jars/delta-<version>/``;
3. otherwise Spark's own resolver fetches them from Maven Central (``spark.jars.packages``).
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from pathlib import Path

from pyspark.sql import SparkSession

from fwpolicy.config import ConfigError
from fwpolicy.io import class_archive

log = logging.getLogger(__name__)

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
SCALA_BINARY = "2.12"  # pyspark 3.5 ships Scala 2.12


def delta_version() -> str:
    """The delta-spark version installed beside pyspark; its jars must match it exactly."""
    return version("delta-spark")


def delta_coordinates() -> list[str]:
    """Maven coordinates of the Delta jars for the installed delta-spark."""
    v = delta_version()
    return [f"io.delta:delta-spark_{SCALA_BINARY}:{v}", f"io.delta:delta-storage:{v}"]


def jar_cache_dir() -> Path:
    """Where ``make setup`` puts the Delta jars (outside the repository, shared by clones)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fwpolicy" / "jars" / f"delta-{delta_version()}"


def local_delta_jars() -> list[str]:
    """Jar paths to hand Spark directly, or [] when they must be resolved from Maven."""
    env = os.environ.get("FWPOLICY_DELTA_JARS", "").strip()
    if env:
        return [p for p in env.split(",") if p]
    cache = jar_cache_dir()
    jars = sorted(str(p) for p in cache.glob("*.jar")) if cache.is_dir() else []
    return jars if len(jars) >= 2 else []


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with a gateway to a JVM it already configured.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def driver_java_options() -> str:
    """The embedded JVM's options: ``FWPOLICY_DRIVER_JAVA_OPTIONS`` if set, else the throughput
    collector (G1's concurrent threads and barriers compete with the tasks on a laptop's few
    cores: a 2M-event run took 26 s instead of 32 s) and the class archive if ``make archive``
    built one (``fwpolicy.io.class_archive``)."""
    chosen = os.environ.get("FWPOLICY_DRIVER_JAVA_OPTIONS")
    if chosen is not None:
        return chosen
    return " ".join(["-XX:+UseParallelGC", *class_archive.java_options()])


def metastore_dir() -> Path:
    """Where an embedded session with a catalog keeps its Hive metastore and warehouse:
    ``FWPOLICY_METASTORE``, else ``$XDG_DATA_HOME/fwpolicy/metastore`` (``~/.local/share/...``),
    one for every run of the user, so tables registered by one run are there for the next."""
    chosen = os.environ.get("FWPOLICY_METASTORE")
    if chosen:
        return Path(chosen).expanduser().resolve()
    data = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return data / "fwpolicy" / "metastore"


def with_hive(builder: SparkSession.Builder, java_options: str) -> SparkSession.Builder:
    """``builder`` with a local Hive metastore (Derby, in ``metastore_dir()``): what ``--catalog``
    registers tables in on a laptop."""
    root = metastore_dir()
    if any(c.isspace() for c in str(root)):
        raise ConfigError(f"the metastore folder may not contain spaces: {root} (set FWPOLICY_METASTORE)")
    root.mkdir(parents=True, exist_ok=True)
    return (
        builder.enableHiveSupport()
        .config("spark.sql.warehouse.dir", str(root / "warehouse"))
        .config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        )
        # Derby writes derby.log into its home, not into the working directory.
        .config("spark.driver.extraJavaOptions", f"{java_options} -Dderby.system.home={root}")
    )


def local_builder(
    master: str = "local[*]", app_name: str = "fwpolicy", hive: bool = False
) -> SparkSession.Builder:
    """A builder for an embedded session with Delta Lake; tests and the CLI share it.

    ``hive``: with a local Hive metastore (``with_hive``), for ``--catalog``."""
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        # An embedded session talks only to itself: stay on loopback.
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        # Small local tables: Delta's default of 50 snapshot partitions dominates run time.
        .config("spark.databricks.delta.snapshotPartitions", "4")
        # A local lake's date folders are listed by the driver itself: Spark's default of a
        # parallel listing job for more than 32 folders costs a second and lists nothing faster.
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "4096")
        # Smaller read splits than the default 128 MiB: a few cores finish the scan together
        # instead of one core reading the last large split alone.
        .config("spark.sql.files.maxPartitionBytes", str(32 * 2**20))
        # The .crc beside each commit costs a Spark job per commit and serves only validation.
        .config("spark.databricks.delta.writeChecksumFile.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(max(4, (os.cpu_count() or 2) * 2)))
        # A run compiles a few hundred generated classes, many of them again for the next
        # table over the same steps; Spark keeps only 100, and Janino's compile is a fifth of
        # the driver's time on small inputs. A kept class is a few kilobytes.
        .config("spark.sql.codegen.cache.maxEntries", "2000")
        .config("spark.driver.memory", os.environ.get("FWPOLICY_DRIVER_MEMORY", "3g"))
        .config("spark.driver.extraJavaOptions", driver_java_options())
    )
    jars = local_delta_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        log.info("Delta jars not cached; resolving %s from Maven Central", delta_coordinates())
        builder = builder.config("spark.jars.packages", ",".join(delta_coordinates())).config(
            "spark.jars.repositories", MAVEN_CENTRAL
        )
    return with_hive(builder, driver_java_options()) if hive else builder


def get_spark(app_name: str = "fwpolicy", master: str | None = None, hive: bool = False) -> SparkSession:
    """The active session if a launcher made one, else an embedded local Delta session (with a
    local Hive metastore when ``hive``: a launcher's session has its own catalog)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if _launched_by_spark_submit() and master is None:
        return SparkSession.builder.appName(app_name).getOrCreate()
    spark = local_builder(master or "local[*]", app_name, hive).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def fetch_delta_jars() -> Path | None:
    """Fetch the Delta jars with Maven into ``jar_cache_dir()`` (run by ``make setup``).

    Maven uses the machine's own repository settings and cache (~/.m2). Without ``mvn`` this
    is skipped, and the first session resolves the jars from Maven Central instead.
    """
    import shutil
    import subprocess

    cache = jar_cache_dir()
    if local_delta_jars():
        return cache
    mvn = shutil.which("mvn")
    if mvn is None:
        log.warning("mvn not found; Spark will resolve %s on first use", delta_coordinates())
        return None
    cache.mkdir(parents=True, exist_ok=True)
    for coord in delta_coordinates():
        subprocess.run(
            [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={coord}:jar", f"-DoutputDirectory={cache}"],
            check=True,
        )
    return cache


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    where = fetch_delta_jars()
    print(f"Delta jars: {where or 'resolved by Spark on first use'}")
