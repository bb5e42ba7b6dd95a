"""The README's walkthrough runs as written.

The commands are read from the README's "From demo data to a reviewed policy" block, not copied
here, so the test fails when the README and the CLI drift apart. Only paths and the fleet's size
change: ``data/`` goes to a temporary directory, ``conf/`` to the repository's own, and the fleet
is made small (``--devices``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pyspark.sql import functions as F

from fwpolicy.cli import main

from helpers import REPO

SECTION = "## From demo data to a reviewed policy and a hunting list"
SMALL_FLEET = "30"


def walkthrough() -> list[list[str]]:
    """The CLI argument lists of the walkthrough block, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(re.escape(SECTION) + r"\s+```sh\n(.*?)```", text, re.S)
    assert block, f"the README has no shell block under {SECTION!r}"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words[:3] == ["$PY", "-m", "fwpolicy"]:
            commands.append(words[3:])
    return commands


def localised(args: list[str], tmp: Path) -> list[str]:
    """``data/...`` -> ``tmp/...``, ``conf/...`` -> the repository's, and a small fleet."""
    out = []
    for i, word in enumerate(args):
        if word.startswith("data/"):
            word = str(tmp / word)
        elif word.startswith("conf/"):
            word = str(REPO / word)
        elif i > 0 and args[i - 1] == "--devices":
            word = SMALL_FLEET
        out.append(word)
    return out


def test_the_walkthrough_has_its_three_steps():
    assert [c[0] for c in walkthrough()] == ["generate", "run", "export"]


def test_the_walkthrough_runs_as_written(spark, tmp_path):
    for args in walkthrough():
        assert main(localised(args, tmp_path)) == 0, args

    out = tmp_path / "data" / "out"
    policy = spark.read.format("delta").load(str(out / "firewall_policy"))
    assert policy.count() > 0
    # The normalized profile folded the paths: no raw drive letters are left in the aliases.
    assert policy.where(F.col("AliasPath").rlike(r"^[a-z]:\\")).count() == 0
    # The shipped rules tag benign traffic; every table of the window is there.
    assert policy.where(F.size("Tags") > 0).count() > 0
    for table in ("unusual_programs", "excluded_connections", "run_audit"):
        assert (out / table / "_delta_log").is_dir(), table
    # export wrote allow rules, each in the window's group and for a program of the policy.
    lines = (tmp_path / "data" / "rules.ps1").read_text().splitlines()
    active = [line for line in lines if line.startswith("New-NetFirewallRule ")]
    assert active, "no rule passed --min-machines 3 --min-days 3"
    assert all("-Group 'fwpolicy 2026-08-15'" in line for line in active)
    wide = policy.where((F.col("DistinctMachines") >= 3) & (F.col("window_end") == F.lit("2026-08-15")))
    assert len(active) <= wide.count()
