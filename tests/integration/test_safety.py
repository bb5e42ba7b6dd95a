"""Safety: a run never writes its input, never overwrites what it did not create, and does not
log what it should not.

* ``--output`` equal to or inside ``--source`` is refused, symlinks resolved (``check_paths``).
* A path under the output root that holds a table fwpolicy did not create (a Delta table
  written by plain Spark, a directory of Parquet files, a file) is refused with exit code 2
  before any work, and is left as it was.
* The logs of a run with ``--include-inbound-remote-ips`` hold no inbound remote IP.
"""

from __future__ import annotations

import logging
import os

import pytest
from pyspark.sql import functions as F

from fwpolicy.cli import main
from fwpolicy.config import ConfigError, PolicyConfig, RunSpec
from fwpolicy.io.sink import OWNER, OWNER_PROPERTY, create_owned, ensure_owned, mark_owned, table_properties
from fwpolicy.tasks.audit import AUDIT_TABLE
from fwpolicy.tasks.run import POLICY_TABLE, check_paths

from helpers import DAY, NEXT_DAY, event, events_df, server

REFUSED = "refusing to overwrite a table fwpolicy did not create"
INBOUND_IP = "203.0.113.77"  # TEST-NET-3: appears nowhere else
SVC = r"C:\Windows\System32\svchost.exe"


def run_args(source, out, *extra):
    window = ["--start", DAY.isoformat(), "--end", NEXT_DAY.isoformat()]
    return [
        "run",
        "--source",
        str(source),
        "--source-format",
        "parquet",
        "--output",
        str(out),
        *window,
        *extra,
    ]


def spec(source, output) -> RunSpec:
    return RunSpec(str(source), "parquet", str(output), DAY, NEXT_DAY, PolicyConfig())


@pytest.fixture(scope="module")
def source(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "src"
    rows = [
        event(),
        *server(SVC, 3389, INBOUND_IP, RemotePort=50123),
    ]
    events_df(spark, rows).coalesce(1).write.parquet(str(path))
    return path


def files_under(path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


# ------------------------------------------------------------------- output vs source


def test_output_equal_to_or_inside_the_source_is_refused(tmp_path):
    src = tmp_path / "lake"
    (src / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(src, tmp_path / "link-to-lake")
    os.symlink(src / "sub", tmp_path / "link-to-sub")
    refused = [
        src,
        f"{src}/",
        src / "out",
        src / "sub" / ".." / "out",
        tmp_path / "link-to-lake",  # a symlink to the source itself
        tmp_path / "link-to-lake" / "out",
        tmp_path / "link-to-sub",  # a symlink into the source
    ]
    for out in refused:
        with pytest.raises(ConfigError, match="inside the source"):
            check_paths(spec(src, out))
    # the source given through a symlink, the output as the real path inside it
    with pytest.raises(ConfigError, match="inside the source"):
        check_paths(spec(tmp_path / "link-to-lake", src / "out"))
    for out in (tmp_path / "elsewhere", tmp_path / "lake2", tmp_path):
        check_paths(spec(src, out))  # a sibling, or a parent of the source, is fine
    for out in ("s3a://b/lake", "s3a://b/lake/", "s3a://b/lake/out"):
        with pytest.raises(ConfigError, match="inside the source"):
            check_paths(RunSpec("s3a://b/lake/", "delta", out, DAY, NEXT_DAY))
    check_paths(RunSpec("s3a://b/lake", "delta", "s3a://b/lake2", DAY, NEXT_DAY))


def test_cli_refuses_output_equal_to_source(spark, source, capsys):
    before = files_under(source)
    assert main(run_args(source, source)) == 2
    assert "inside the source" in capsys.readouterr().err
    assert files_under(source) == before


# -------------------------------------------------------------- tables not fwpolicy's


def test_a_plain_delta_table_at_the_policy_path_is_refused(spark, source, tmp_path, capsys):
    target = tmp_path / "out" / POLICY_TABLE
    events_df(spark, [event()]).write.format("delta").save(str(target))
    before = files_under(target)
    assert main(run_args(source, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert REFUSED in err and str(target) in err and "Delta table without fwpolicy's mark" in err
    assert files_under(target) == before  # not a new commit, not a new file
    assert not (tmp_path / "out" / AUDIT_TABLE).exists()


def test_a_parquet_directory_at_the_policy_path_is_refused(spark, source, tmp_path, capsys):
    target = tmp_path / "out" / POLICY_TABLE
    events_df(spark, [event()]).write.parquet(str(target))
    before = files_under(target)
    assert main(run_args(source, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert REFUSED in err and str(target) in err and "not a Delta table" in err
    assert files_under(target) == before
    assert not (tmp_path / "out" / AUDIT_TABLE).exists()


def test_a_foreign_run_audit_is_refused_before_any_write(spark, source, tmp_path, capsys):
    target = tmp_path / "out" / AUDIT_TABLE
    spark.range(1).write.format("delta").save(str(target))
    assert main(run_args(source, tmp_path / "out")) == 2
    assert REFUSED in capsys.readouterr().err
    assert not (tmp_path / "out" / POLICY_TABLE).exists()


def test_an_output_root_that_is_a_delta_table_is_refused(spark, source, tmp_path, capsys):
    """Tables written inside another table's folder would go at its next VACUUM."""
    root = tmp_path / "events-table"
    spark.range(1).write.format("delta").save(str(root))
    assert main(run_args(source, root)) == 2
    assert f"the output root {root} is a Delta table" in capsys.readouterr().err
    assert not (root / POLICY_TABLE).exists()


def test_ownership_states(spark, tmp_path):
    """Absent, empty and owned paths are writable; a file is not; an adopted table is."""
    assert ensure_owned(spark, str(tmp_path / "nothing")) is False
    (tmp_path / "empty").mkdir()
    assert ensure_owned(spark, str(tmp_path / "empty")) is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=REFUSED):
        ensure_owned(spark, str(tmp_path / "file"))
    owned = str(tmp_path / "owned")
    create_owned(
        spark, owned, spark.range(1).withColumn("window_end", F.current_date()).schema, ("window_end",)
    )
    assert ensure_owned(spark, owned) is True
    assert table_properties(spark, owned)[OWNER_PROPERTY] == OWNER
    foreign = str(tmp_path / "foreign")
    spark.range(1).write.format("delta").save(foreign)
    with pytest.raises(ConfigError, match=REFUSED):
        ensure_owned(spark, foreign)
    mark_owned(spark, foreign)
    assert ensure_owned(spark, foreign) is True


def test_a_relative_output_path_is_created_not_mistaken_for_a_table_name(spark, tmp_path, caplog):
    # Delta takes a relative location for a table name; the demo writes to data/demo-out/...
    # Relative to the working directory the JVM started in (the same as this process's).
    relative = os.path.relpath(tmp_path / "out" / "table")
    with caplog.at_level(logging.INFO, logger="fwpolicy.io.sink"):
        create_owned(spark, relative, spark.range(1).schema)
    assert ensure_owned(spark, relative) is True
    assert (tmp_path / "out" / "table" / "_delta_log").is_dir()
    assert f"created {relative}" in caplog.text and "concurrent" not in caplog.text
    # Adopting a foreign table by a relative path marks that table, not a table name.
    foreign = os.path.relpath(tmp_path / "out" / "foreign")
    spark.range(1).write.format("delta").save(foreign)
    with pytest.raises(ConfigError, match=REFUSED):
        ensure_owned(spark, foreign)
    mark_owned(spark, foreign)
    assert ensure_owned(spark, foreign) is True


# ------------------------------------------------------------------------------- logs


def test_logs_hold_no_inbound_remote_ip(spark, source, tmp_path, caplog, capfd):
    """Even with ``--include-inbound-remote-ips`` (the IP is in the table), no log line and
    nothing printed holds it. (The JVM's own log goes to the stderr it was started with; the
    subprocess runs of ``test_crash`` check it too.)"""
    caplog.set_level(logging.DEBUG)
    assert main(run_args(source, tmp_path / "out", "--include-inbound-remote-ips")) == 0
    policy = spark.read.format("delta").load(str(tmp_path / "out" / POLICY_TABLE))
    inbound = policy.where(F.col("Directionality") == "Inbound").select(F.explode("RemoteIPs")).collect()
    assert INBOUND_IP in {r[0] for r in inbound}  # the flag took effect
    out, err = capfd.readouterr()
    assert "run_audit" in caplog.text and "firewall_policy" in out  # the logs and summary were captured
    for text in (caplog.text, out, err):
        assert INBOUND_IP not in text
