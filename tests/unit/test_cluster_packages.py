"""The ``--packages`` a cluster needs, per Spark line, are the ones the docs and jobs/ show."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwpolicy.io.session import CLUSTER_PACKAGES, scala_binary

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/cluster.md", "jobs/firewall_policy.py")


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("line", sorted(CLUSTER_PACKAGES))
def test_each_spark_line_s_coordinates_are_named(doc, line):
    text = (REPO / doc).read_text(encoding="utf-8")
    delta, avro = CLUSTER_PACKAGES[line]
    assert delta in text
    assert avro.split(":", 1)[1] in text  # spark-avro_<scala>:<spark>, its group named nearby


def test_the_scala_line_follows_the_spark_line():
    assert scala_binary("4.2.0") == "2.13" and scala_binary("3.5.7") == "2.12"
    for line, (delta, avro) in CLUSTER_PACKAGES.items():
        scala = scala_binary(line + ".0")
        assert delta.startswith(f"io.delta:delta-spark_{scala}:") and f"spark-avro_{scala}:{line}" in avro
