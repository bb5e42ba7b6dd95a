"""``--catalog`` names: checked, then quoted as identifiers for the one DDL statement."""

from __future__ import annotations

import pytest

from fwpolicy.config import ConfigError
from fwpolicy.io.catalog import quoted


def test_a_checked_name_is_quoted_part_by_part():
    assert quoted("security") == "`security`"
    assert quoted("main.fw_bi") == "`main`.`fw_bi`"


@pytest.mark.parametrize("name", ["", "a`b", "x; DROP SCHEMA y", "a.b.c", "sec-urity", "1st", "a .b"])
def test_anything_else_is_refused_before_it_is_quoted(name):
    with pytest.raises(ConfigError, match="a schema name is one or two identifiers"):
        quoted(name)
