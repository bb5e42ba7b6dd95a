"""Fold a program's folder path to an alias such as ``%windir%\\system32\\svchost.exe``.

Profile ``kql`` is the seed query's ``AliasPath`` function, character for character, quirks
included, because its output must match what analysts already see in Defender:

* ``C:\\Users\\bob`` becomes ``%userprofile%b`` (``indexof`` finds nothing, answers -1, and
  ``substring`` counts -1 from the end);
* a one-letter user name loses the next folder (the search for ``\\`` starts at index 11);
* ``\\\\?\\C:\\Windows\\x.exe`` becomes ``%windir%dows\\x.exe`` (fixed offsets after ``contains``);
* only ``c:`` profiles are folded.

The alias is one Column expression: Spark evaluates it in the JVM, never through Python.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from fwpolicy.config import PROFILES, PolicyConfig
from fwpolicy.query.kql import ColumnOrName, _col, kql_contains, kql_indexof, kql_startswith, kql_substring
from fwpolicy.query.normalized import normalized_alias


def kql_alias(folder_path: ColumnOrName) -> Column:
    """The seed query's ``AliasPath``: ``tolower(case(...))`` over a never-null path."""
    fp = _col(folder_path)
    n = F.length(fp)

    def profile(offset: int) -> Column:
        # substring(FolderPath, indexof(FolderPath, '\\', offset), strlen(FolderPath) - offset)
        return F.concat(F.lit("%UserProfile%"), kql_substring(fp, kql_indexof(fp, "\\", offset), n - offset))

    def fixed(prefix: str, offset: int) -> Column:
        return F.concat(F.lit(prefix), kql_substring(fp, offset))

    # Lower-case after cutting: lower() can change a string's length (e.g. 'İ'), so the
    # offsets must apply to the original text, as they do in KQL.
    return F.lower(
        F.when(kql_startswith(fp, "c:\\users\\"), profile(11))
        .when(kql_startswith(fp, "c:\\documents and settings\\"), profile(27))
        .when(kql_contains(fp, ":\\Windows\\"), fixed("%windir%", 10))
        .when(kql_contains(fp, ":\\programdata\\"), fixed("%programdata%", 14))
        .when(kql_contains(fp, ":\\Program Files\\"), fixed("%ProgramFiles%", 16))
        .when(kql_contains(fp, ":\\Program Files (x86)\\"), fixed("%ProgramFilesx86%", 22))
        .otherwise(fp)
    )


def alias_expr(folder_path: ColumnOrName, profile: str = "kql", cfg: PolicyConfig | None = None) -> Column:
    """The alias expression of a profile (see ``PROFILES``); ``cfg`` may name alias rules."""
    if profile == "kql":
        return kql_alias(folder_path)
    if profile == "normalized":
        return normalized_alias(folder_path, cfg)
    raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
