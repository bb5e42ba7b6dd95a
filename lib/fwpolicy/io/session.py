"""One place that builds a SparkSession.

A job never hard-codes a master or jars: under ``spark-submit`` (or on Databricks, EMR, Synapse)
the session already exists or is configured by the launcher, and we only ``getOrCreate`` it.
Run from a plain ``python`` process, we build an embedded ``local[*]`` session with Delta Lake.

The embedded JVM maps the class archive that ``make run`` and ``make bench`` build
(``io.class_archive``).

The jars added to pyspark's own (Delta Lake, and Spark's Avro source for ``ingest``) are found
in this order, so that a fresh machine needs nobody:
1. ``FWPOLICY_DELTA_JARS``: a comma-separated list of jar paths;
2. the jars ``make setup`` fetched with Maven into
   ``~/.cache/fwpolicy/jars/spark-<pyspark>-delta-<delta-spark>/`` (``fetch_jars``);
3. otherwise Spark's own resolver fetches them from Maven Central (``spark.jars.packages``).

Both Spark lines work: Spark 4 with delta-spark 4 (the ``local`` extra, Scala 2.13) and Spark 3.5
with delta-spark 3.3 (the ``spark35`` extra, Scala 2.12); the coordinates follow the installed
pair.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

from pyspark.sql import SparkSession

from fwpolicy.config import ConfigError
from fwpolicy.io import class_archive

log = logging.getLogger(__name__)

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
# What a cluster's spark-submit needs per Spark line (jobs/, README and docs/cluster.md show
# them): Delta built for that Spark, and Spark's Avro source for `ingest` of Event Hubs Capture.
CLUSTER_PACKAGES = {
    "4.2": ("io.delta:delta-spark_2.13:4.4.0", "org.apache.spark:spark-avro_2.13:4.2.0"),
    "3.5": ("io.delta:delta-spark_2.12:3.3.2", "org.apache.spark:spark-avro_2.12:3.5.7"),
}
# Written last into the jar cache by ``fetch_jars``: a folder without it is an interrupted fetch.
FETCHED_MARK = ".complete"


def spark_version() -> str:
    """The installed pyspark's version (that of the embedded engine)."""
    return version("pyspark")


def scala_binary(spark: str | None = None) -> str:
    """The Scala line of a Spark version's jars: 2.13 from Spark 4, 2.12 for Spark 3.5."""
    major = int((spark or spark_version()).split(".")[0])
    return "2.13" if major >= 4 else "2.12"


def delta_version() -> str:
    """The delta-spark version installed beside pyspark; its jars must match it exactly."""
    return version("delta-spark")


def jar_coordinates() -> list[str]:
    """Maven coordinates of the jars an embedded session adds to pyspark's own: Delta for the
    installed delta-spark and Spark's Avro data source (``ingest`` of Event Hubs Capture) for
    the installed pyspark. Their other dependencies come in transitively."""
    scala = scala_binary()
    return [
        f"io.delta:delta-spark_{scala}:{delta_version()}",
        f"org.apache.spark:spark-avro_{scala}:{spark_version()}",
    ]


def jar_cache_dir() -> Path:
    """Where ``make setup`` puts the jars (outside the repository, shared by clones)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fwpolicy" / "jars" / f"spark-{spark_version()}-delta-{delta_version()}"


def local_delta_jars() -> list[str]:
    """Jar paths to hand Spark directly, or [] when they must be resolved from Maven."""
    env = os.environ.get("FWPOLICY_DELTA_JARS", "").strip()
    if env:
        return [p for p in env.split(",") if p]
    cache = jar_cache_dir()
    if not (cache / FETCHED_MARK).is_file():
        return []
    return sorted(str(p) for p in cache.glob("*.jar"))


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with a gateway to a JVM it already configured.
    return "PYSPARK_GATEWAY_PORT" in os.environ


# The embedded driver's logging: Spark's warnings, less the stack traces of a failed task that
# fwpolicy reports itself in one line (see the file).
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")


def driver_java_options() -> str:
    """The embedded JVM's options: ``FWPOLICY_DRIVER_JAVA_OPTIONS`` if set, else the throughput
    collector (G1's concurrent threads and barriers compete with the tasks on a laptop's few
    cores: a 2M-event run took 26 s instead of 32 s), fwpolicy's logging (``LOG_CONFIG``) and
    the class archive if ``make archive`` built one (``fwpolicy.io.class_archive``)."""
    chosen = os.environ.get("FWPOLICY_DRIVER_JAVA_OPTIONS")
    if chosen is not None:
        return chosen
    logging_config = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    return " ".join(["-XX:+UseParallelGC", logging_config, *class_archive.java_options()])


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


def embedded_conf() -> dict[str, str]:
    """The settings of a session whose JVM fwpolicy starts: Delta Lake, UTC, loopback, and a
    laptop's tuning. ``local_builder`` applies them, and so does a ``--remote local[...]``
    session, whose Spark Connect server pyspark starts in a JVM of this process."""
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        # An embedded session talks only to itself: stay on loopback.
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # Small local tables: Delta's default of 50 snapshot partitions dominates run time.
        "spark.databricks.delta.snapshotPartitions": "4",
        # A local lake's date folders are listed by the driver itself: Spark's default of a
        # parallel listing job for more than 32 folders costs a second and lists nothing faster.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
        # Smaller read splits than the default 128 MiB: a few cores finish the scan together
        # instead of one core reading the last large split alone.
        "spark.sql.files.maxPartitionBytes": str(32 * 2**20),
        # The .crc beside each commit costs a Spark job per commit and serves only validation.
        "spark.databricks.delta.writeChecksumFile.enabled": "false",
        "spark.sql.shuffle.partitions": str(max(4, (os.cpu_count() or 2) * 2)),
        # A run compiles a few hundred generated classes, many of them again for the next
        # table over the same steps; Spark keeps only 100, and Janino's compile is a fifth of
        # the driver's time on small inputs. A kept class is a few kilobytes.
        "spark.sql.codegen.cache.maxEntries": "2000",
        "spark.driver.memory": os.environ.get("FWPOLICY_DRIVER_MEMORY", "3g"),
        "spark.driver.extraJavaOptions": driver_java_options(),
    }
    jars = local_delta_jars()
    if jars:
        conf["spark.jars"] = ",".join(jars)
    else:
        log.info("jars not cached; resolving %s from Maven Central", jar_coordinates())
        conf["spark.jars.packages"] = ",".join(jar_coordinates())
        conf["spark.jars.repositories"] = MAVEN_CENTRAL
    return conf


def local_builder(
    master: str = "local[*]", app_name: str = "fwpolicy", hive: bool = False
) -> SparkSession.Builder:
    """A builder for an embedded session with Delta Lake; tests and the CLI share it.

    ``hive``: with a local Hive metastore (``with_hive``), for ``--catalog``."""
    # Python workers (the job runs no UDF; the bench's naive port does) run this interpreter,
    # with this environment's packages, rather than the first python3 on the PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in embedded_conf().items():
        builder = builder.config(key, value)
    return with_hive(builder, driver_java_options()) if hive else builder


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """``key`` set to ``value`` in the session inside, and as it was (or unset) after."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


# The Spark Connect server every get_spark() of this process uses (``--remote``), if any.
REMOTE_ENV = "SPARK_REMOTE"
_remote: str | None = None


def use_remote(url: str | None) -> None:
    """Make every later ``get_spark()`` of this process a Spark Connect client of ``url``
    (``sc://host:port/;token=...``, or ``local[N]`` for a server pyspark starts here)."""
    global _remote
    _remote = url or None


def remote_url() -> str | None:
    """``--remote`` if given, else ``SPARK_REMOTE`` (pyspark's own variable), else None."""
    return _remote or os.environ.get(REMOTE_ENV) or None


def remote_session(url: str) -> SparkSession:
    """A Spark Connect session. For ``local[N]``, pyspark starts the server in a JVM of this
    process, with Delta and the rest of ``embedded_conf``; a remote server brings its own."""
    builder = SparkSession.builder.remote(url)
    if url.startswith("local"):
        for key, value in embedded_conf().items():
            builder = builder.config(key, value)
    return builder.getOrCreate()


def get_spark(app_name: str = "fwpolicy", master: str | None = None, hive: bool = False) -> SparkSession:
    """The Spark Connect session of ``remote_url()`` if there is one; else the active session
    if a launcher made one; else an embedded local Delta session (with a local Hive metastore
    when ``hive``: a launcher's or a Connect server's session has its own catalog)."""
    url = remote_url()
    if url and master is None:
        return remote_session(url)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if _launched_by_spark_submit() and master is None:
        return SparkSession.builder.appName(app_name).getOrCreate()
    spark = local_builder(master or "local[*]", app_name, hive).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fwpolicy</groupId><artifactId>jars</artifactId><version>1</version>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _artifact(jar: str) -> str:
    """``delta-spark_2.13-4.4.0.jar`` -> ``delta-spark_2.13``: the name without its version."""
    return re.sub(r"-\d[^-]*(-\d+)?\.jar$", "", jar)


def fetch_jars() -> Path | None:
    """Fetch the jars of ``jar_coordinates`` and their dependencies with Maven into
    ``jar_cache_dir()`` (run by ``make setup``), less those pyspark ships itself.

    Delta 4 needs its kernel and Unity Catalog client jars too, so the dependencies are
    resolved (``dependency:copy-dependencies`` on a throwaway pom) rather than listed here. A
    dependency pyspark already has (Scala, Hadoop, Parquet, Jackson, ...) is dropped: the
    engine's own version must win. Maven uses the machine's settings and cache (~/.m2).
    Without ``mvn`` this is skipped, and the first session resolves the jars from Maven Central.
    """
    import shutil
    import subprocess
    import tempfile

    import pyspark

    cache = jar_cache_dir()
    if local_delta_jars():
        return cache
    mvn = shutil.which("mvn")
    if mvn is None:
        log.warning("mvn not found; Spark will resolve %s on first use", jar_coordinates())
        return None
    dependencies = "\n".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in (c.split(":") for c in jar_coordinates())
    )
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="fwpolicy-jars-") as work:
        (Path(work) / "pom.xml").write_text(POM.format(dependencies=dependencies))
        copy = ["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={cache}"]
        subprocess.run(
            [mvn, "-q", "-B", *copy],
            check=True,
            cwd=work,
        )
    shipped = {_artifact(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    for jar in cache.glob("*.jar"):
        if _artifact(jar.name) in shipped:
            jar.unlink()
    (cache / FETCHED_MARK).write_text("\n".join(jar_coordinates()) + "\n")
    return cache


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    where = fetch_jars()
    print(f"Delta and Avro jars: {where or 'resolved by Spark on first use'}")
