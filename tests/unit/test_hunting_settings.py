"""unusual_programs' settings and the scoring table in its docs: pure Python, no Spark.

The rules themselves, on events, are in ``integration/test_hunting.py``.
"""

from __future__ import annotations

import dataclasses

import pytest

import fwpolicy.review.hunting as hunting
from fwpolicy.config import ConfigError
from fwpolicy.review.hunting import HuntingSettings


def test_docstring_holds_the_default_scoring_table():
    assert hunting.scoring_table() in hunting.__doc__


def test_reason_order_is_weight_then_name():
    assert HuntingSettings().ordered_reasons() == [
        "recycle_bin",
        "downloads_or_temp",
        "hidden_unix_dir",
        "programdata_root",
        "public_folder",
        "public_nonstandard_port",
        "system_folder_outlier",
        "low_prevalence",
        "recently_first_seen",
        "user_writable_path",
    ]
    s = HuntingSettings(weights={"user_writable_path": 9, "recycle_bin": 0})
    assert s.ordered_reasons()[0] == "user_writable_path" and "recycle_bin" not in s.ordered_reasons()


def test_settings_normalised_and_hashable():
    s = HuntingSettings(standard_ports=[443, 80, 443], weights={"low_prevalence": 5})
    assert s.standard_ports == (80, 443)
    assert s.weight("low_prevalence") == 5 and s.weight("recycle_bin") == 4
    assert hash(s) == hash(HuntingSettings(standard_ports=(80, 443), weights={"low_prevalence": 5}))
    assert dataclasses.asdict(s)["weights"][0] == ("recycle_bin", 4)
    assert s.digest() != HuntingSettings().digest()
    assert HuntingSettings.from_mapping({"recent_days": 3}).recent_days == 3
    assert HuntingSettings.from_mapping(None) == HuntingSettings()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rare_share": 0},
        {"rare_share": 1},
        {"rare_share": True},
        {"outlier_share": 1.5},
        {"min_folder_programs": 1},
        {"recent_days": 0},
        {"recent_days": 1.5},
        {"max_ports": 0},
        {"standard_ports": "443"},
        {"standard_ports": [70000]},
        {"standard_ports": [True]},
        {"weights": {"nope": 1}},
        {"weights": {"low_prevalence": -1}},
        {"weights": {"low_prevalence": 1.0}},
        {"weights": [1, 2]},
        {"weights": dict.fromkeys(hunting.REASONS, 0)},
    ],
)
def test_settings_rejected(kwargs):
    with pytest.raises(ConfigError):
        HuntingSettings(**kwargs)


def test_from_mapping_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown setting"):
        HuntingSettings.from_mapping({"min_fleets": 3})
    # The absolute thresholds of earlier versions are gone: prevalence is relative now.
    with pytest.raises(ConfigError, match="rare_share"):
        HuntingSettings.from_mapping({"max_machines_rare": 2, "min_fleet": 20})
