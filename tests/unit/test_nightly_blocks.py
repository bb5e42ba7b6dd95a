"""Nightly incremental mode without Spark: the spec, the settings digest, the aligned blocks of
days, the plan of what to build and reuse, and the SQL predicates.

The nightly runs themselves are in ``integration/test_nightly.py``. Days are ``D0`` ..
``Dn`` as there.
"""

from __future__ import annotations

import datetime as dt

import pytest

from fwpolicy.config import ConfigError, PolicyConfig, RunSpec
from fwpolicy.tasks.nightly import (
    EPOCH,
    LENGTHS,
    NightlySpec,
    blocks_of,
    blocks_predicate,
    children,
    days_predicate,
    format_days,
    partials_digest,
    plan_blocks,
)

D0 = dt.date(2026, 8, 1)


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


def days(lo: int, hi: int) -> list[dt.date]:
    """Days ``D<lo>`` .. ``D<hi>`` inclusive."""
    return [day(i) for i in range(lo, hi + 1)]


def test_spec_window_and_refresh_days():
    spec = NightlySpec("src", "delta", "out", day(9), window_days=5, refresh_days=2)
    assert spec.window() == days(5, 9)
    assert spec.refresh() == days(8, 9)
    assert (spec.window_start, spec.window_end) == (day(5), day(10))
    assert spec.run_spec() == RunSpec("src", "delta", "out", day(5), day(10))
    assert NightlySpec("s", "delta", "o", day(9), window_days=3, refresh_days=0).refresh() == []
    assert NightlySpec("s", "delta", "o", day(9), window_days=3, refresh_days=9).refresh() == days(7, 9)
    assert NightlySpec("s", "delta", "o", day(9), window_days=1).window() == [day(9)]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"window_days": 0}, "window_days"),
        ({"window_days": True}, "window_days"),
        ({"refresh_days": -1}, "refresh_days"),
        ({"refresh_days": 1.5}, "refresh_days"),
        ({"source_format": "csv"}, "source format"),
        ({"date": dt.datetime(2026, 8, 1, 12)}, "date"),
    ],
)
def test_spec_rejects_bad_values(kw, message):
    args = {"source": "s", "source_format": "delta", "output": "o", "date": day(0), **kw}
    with pytest.raises(ConfigError, match=message):
        NightlySpec(**args)


def test_digest_covers_only_settings_that_change_the_connection_table(tmp_path):
    base = partials_digest(PolicyConfig())
    assert partials_digest(PolicyConfig()) == base
    for rollup_only in (
        PolicyConfig(set_cap=5),
        PolicyConfig(distinct_machines="approx"),
        PolicyConfig(server_keys_join="shuffle"),
        PolicyConfig(partition_columns=("day",)),
        PolicyConfig(hunting={"recent_days": 3}),
    ):
        assert partials_digest(rollup_only) == base
    for changed in (
        PolicyConfig(include_inbound_remote_ips=True),
        PolicyConfig(ephemeral_start=32768),
        PolicyConfig(ephemeral_start_linux=40000),
        PolicyConfig(profile="normalized"),
    ):
        assert partials_digest(changed) != base

    # Rules count by content: an edited file changes the digest, a copied one does not.
    rules = tmp_path / "a.yaml"
    rules.write_text("rules:\n  - {name: x, action: exclude, match: {file_name: [x.exe]}}\n")
    with_rules = partials_digest(PolicyConfig(exclusions=str(rules)))
    assert with_rules != base
    copy = tmp_path / "b.yaml"
    copy.write_text("# same rule, other file\n" + rules.read_text())
    assert partials_digest(PolicyConfig(exclusions=str(copy))) == with_rules
    rules.write_text("rules:\n  - {name: x, action: exclude, match: {file_name: [y.exe]}}\n")
    assert partials_digest(PolicyConfig(exclusions=str(rules))) != with_rules


def test_blocks_of_covers_the_window_with_aligned_blocks():
    for offset in range(0, 140, 3):
        start = EPOCH + dt.timedelta(days=64 * 320 + offset)
        for n in (1, 2, 7, 8, 9, 20, 63, 64, 65, 90, 200):
            end = start + dt.timedelta(days=n)
            blocks = blocks_of(start, end)
            covered = [b + dt.timedelta(days=i) for b, length in blocks for i in range(length)]
            # Every day of the window exactly once, in order.
            assert covered == [start + dt.timedelta(days=i) for i in range(n)], (start, n)
            for b, length in blocks:
                assert length in LENGTHS and (b - EPOCH).days % length == 0, (start, n, b, length)
                # Fewest: no block's aligned parent (8 of them) fits in the window.
                if length < max(LENGTHS):
                    parent = EPOCH + dt.timedelta(days=(b - EPOCH).days // (8 * length) * 8 * length)
                    assert not (start <= parent and parent + dt.timedelta(days=8 * length) <= end)
            assert sum(1 for _, length in blocks if length > 1) <= n // 64 + 14
            assert sum(1 for _, length in blocks if length == 1) <= 14
    start = EPOCH + dt.timedelta(days=64 * 320 - 2)
    assert blocks_of(start, start + dt.timedelta(days=75)) == [
        (start, 1),
        (start + dt.timedelta(days=1), 1),
        (start + dt.timedelta(days=2), 64),
        (start + dt.timedelta(days=66), 8),
        (start + dt.timedelta(days=74), 1),
    ]
    assert blocks_of(start, start) == []


def test_children_are_eight_blocks_one_length_down():
    b = EPOCH + dt.timedelta(days=64 * 320)
    assert children((b, 64)) == [(b + dt.timedelta(days=8 * i), 8) for i in range(8)]
    assert children((b, 8)) == [(b + dt.timedelta(days=i), 1) for i in range(8)]


def one_days(block) -> list[dt.date]:
    start, length = block
    return [start + dt.timedelta(days=i) for i in range(length)]


def test_plan_blocks_rebuilds_a_stored_block_holding_a_refresh_day():
    b = EPOCH + dt.timedelta(days=64 * 320)
    window = blocks_of(b - dt.timedelta(days=2), b + dt.timedelta(days=24))  # 2 days, three 8-day blocks
    assert [n for _, n in window] == [1, 1, 8, 8, 8]
    middle = window[3]
    refresh = middle[0] + dt.timedelta(days=3)
    stored = set(window) | {c for block in window if block[1] == 8 for c in children(block)}
    plan = plan_blocks(window, stored, {refresh})
    assert plan.days == [refresh]  # its other days are stored and usable
    assert plan.builds == {8: [middle]}
    assert plan.reused == [w for w in window if w != middle]

    # In a 64-day block: the 8-day block holding the day is rebuilt, then the 64-day block.
    window = blocks_of(b, b + dt.timedelta(days=64))
    assert window == [(b, 64)]
    eights = children((b, 64))
    stored = {(b, 64), *eights, *(c for e in eights for c in children(e))}
    refresh = b + dt.timedelta(days=20)  # in the third 8-day block
    plan = plan_blocks(window, stored, {refresh})
    assert (plan.days, plan.builds, plan.reused) == ([refresh], {8: [eights[2]], 64: [(b, 64)]}, [])

    # Nothing to refresh: every stored block is read as it is.
    plan = plan_blocks(window, stored, set())
    assert (plan.days, plan.builds, plan.reused) == ([], {}, [(b, 64)])


def test_plan_blocks_builds_a_missing_block_from_its_children():
    b = EPOCH + dt.timedelta(days=64 * 320)
    window = blocks_of(b - dt.timedelta(days=2), b + dt.timedelta(days=24))
    middle = window[3]
    # The 8-day block is missing but its days are stored: built from them, nothing read.
    stored = (set(window) - {middle}) | set(children(middle))
    plan = plan_blocks(window, stored, set())
    assert (plan.days, plan.builds) == ([], {8: [middle]})
    assert plan.reused == [w for w in window if w != middle]
    # Its days are missing too: they are computed first, then the block is built from them.
    plan = plan_blocks(window, set(window) - {middle}, set())
    assert (plan.days, plan.builds) == (one_days(middle), {8: [middle]})
    # Nothing stored: every day is computed and every longer block built.
    plan = plan_blocks(window, set(), set())
    assert plan.days == [d for block in window for d in one_days(block)]
    assert plan.builds == {8: [w for w in window if w[1] == 8]} and plan.reused == []
    # A missing 64-day block with some 8-day children stored: only the others are made.
    eights = children((b, 64))
    stored = set(eights[:7]) | set(children(eights[7]))
    plan = plan_blocks([(b, 64)], stored, set())
    assert (plan.days, plan.builds) == ([], {8: [eights[7]], 64: [(b, 64)]})


def test_blocks_predicate():
    assert blocks_predicate([(day(2), 1), (day(-2), 8), (day(0), 1)]) == (
        "(BlockDays = 1 AND BlockStart IN (DATE'2026-08-01', DATE'2026-08-03')) OR "
        "(BlockDays = 8 AND BlockStart IN (DATE'2026-07-30'))"
    )
    with pytest.raises(ValueError):
        blocks_predicate([])
    with pytest.raises(ValueError):
        blocks_predicate([(day(0), 3)])
    with pytest.raises(ValueError):
        blocks_predicate([(dt.datetime(2026, 8, 1), 1)])


def test_days_predicate():
    assert days_predicate("EventDate", [day(2), day(0), day(2)]) == (
        "EventDate IN (DATE'2026-08-01', DATE'2026-08-03')"
    )
    with pytest.raises(ValueError):
        days_predicate("EventDate", [])
    with pytest.raises(TypeError):
        days_predicate("EventDate", [dt.datetime(2026, 8, 1)])
    with pytest.raises(TypeError):
        days_predicate("EventDate", ["2026-08-01'); DROP"])
    with pytest.raises(ValueError):
        days_predicate("EventDate = 1 OR 1", [day(0)])


def test_format_days():
    assert format_days([]) == "none"
    assert format_days([day(3), day(0), day(1), day(2), day(5)]) == "2026-08-01..2026-08-04, 2026-08-06"
