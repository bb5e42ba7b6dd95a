"""``make archive`` builds a class archive that a fresh JVM maps.

The archive is built into a temporary cache (the training process runs generate, run, nightly
and export there), then a second process starts a session with ``-Xshare:on``, which makes the
JVM fail rather than run without the archive: the session's count proves the archive is usable.
Slow: two JVMs, one of them running every command once.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fwpolicy.io import class_archive, session


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    jars = session.local_delta_jars()  # before the cache moves: no Maven resolution in a test
    if jars:
        monkeypatch.setenv("FWPOLICY_DELTA_JARS", ",".join(jars))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FWPOLICY_DRIVER_JAVA_OPTIONS", raising=False)
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    return dict(os.environ)


def test_built_archive_is_mapped_by_a_new_session(cache_env):
    built = class_archive.build()
    assert built is not None and built == class_archive.archive_path() and built.stat().st_size > 10**7
    assert not list(built.parent.glob("*.tmp"))  # written under a temporary name, then renamed
    strict = " ".join(o if o != "-Xshare:auto" else "-Xshare:on" for o in class_archive.java_options())
    code = "from fwpolicy.io.session import get_spark; print('rows', get_spark().range(5).count())"
    env = {**cache_env, "FWPOLICY_DRIVER_JAVA_OPTIONS": f"-XX:+UseParallelGC {strict}"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=built.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rows 5" in done.stdout
    assert class_archive.build() == built  # a second setup reuses it
