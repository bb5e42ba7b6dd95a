"""The kql alias profile on a table of paths, its quirks included on purpose.

Expected values are derived by hand from the seed query's case() expression; the pure-Python
reference must agree with them too, so a mistake in either shows.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from fwpolicy.query.aliasing import alias_expr

from kql_reference import kql_alias as ref_alias

PATHS = [
    (r"C:\Windows\System32\svchost.exe", r"%windir%\system32\svchost.exe"),
    (r"c:\windows\system32\svchost.exe", r"%windir%\system32\svchost.exe"),
    (r"C:\WINDOWS\system32\lsass.exe", r"%windir%\system32\lsass.exe"),
    (r"D:\Windows\explorer.exe", r"%windir%\explorer.exe"),  # contains ':\Windows\' on any drive
    (
        r"C:\Program Files\Google\Chrome\Application\chrome.exe",
        r"%programfiles%\google\chrome\application\chrome.exe",
    ),
    (r"C:\Program Files (x86)\Microsoft\Edge\msedge.exe", r"%programfilesx86%\microsoft\edge\msedge.exe"),
    (
        r"C:\ProgramData\Microsoft\Windows Defender\MsMpEng.exe",
        r"%programdata%\microsoft\windows defender\msmpeng.exe",
    ),
    (r"C:\Users\bob\AppData\Local\Teams\teams.exe", r"%userprofile%\appdata\local\teams\teams.exe"),
    (r"C:\Users\Alice\Downloads\invoice.exe", r"%userprofile%\downloads\invoice.exe"),
    (r"c:\documents and settings\bob\x.exe", r"%userprofile%\x.exe"),
    # Quirk: no '\' at or after index 11, indexof is -1, substring(-1, 1) takes the last char.
    (r"C:\Users\bob", r"%userprofile%b"),
    # Quirk: a one-letter user name loses the next folder (the search starts at index 11).
    (r"C:\Users\a\AppData\x.exe", r"%userprofile%\x.exe"),
    # Quirk: fixed offsets after a `contains` match anywhere.
    (r"\\?\C:\Windows\x.exe", r"%windir%dows\x.exe"),
    # Quirk: only c: profiles are folded; others fall through to the catch-all.
    (r"D:\Users\bob\x.exe", r"d:\users\bob\x.exe"),
    # Profile folders beat the windows rule, because they are tested first.
    (r"C:\Users\bob\Windows\x.exe", r"%userprofile%\windows\x.exe"),
    ("/usr/sbin/sshd", "/usr/sbin/sshd"),
    ("/Applications/Zoom.app/Contents/MacOS/zoom.us", "/applications/zoom.app/contents/macos/zoom.us"),
    ("", ""),
    ("C:\\Users\\", "%userprofile%"),  # start past the end: indexof -1, negative length: ''
    (r"C:\Users\İsa\x.exe", r"%userprofile%\x.exe"),  # offsets apply before lower-casing
]


@pytest.fixture(scope="module")
def aliased(spark):
    df = spark.createDataFrame([(i, p) for i, (p, _) in enumerate(PATHS)], "i int, p string")
    return {r["i"]: r["a"] for r in df.select("i", alias_expr(F.col("p"), "kql").alias("a")).collect()}


@pytest.mark.parametrize(("i", "case"), list(enumerate(PATHS)), ids=[p for p, _ in PATHS])
def test_kql_alias(aliased, i, case):
    path, expected = case
    assert aliased[i] == expected
    assert ref_alias(path) == expected


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="unknown profile 'x'"):
        alias_expr("p", "x")
