"""The embedded JVM's class archive: found by key, mapped when present, overridable."""

from __future__ import annotations

import pytest

from fwpolicy.io import class_archive, session


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FWPOLICY_DRIVER_JAVA_OPTIONS", raising=False)
    return tmp_path


def test_no_archive_means_no_options(cache):
    path = class_archive.archive_path()
    assert path is not None and path.is_relative_to(cache) and not path.exists()
    assert class_archive.java_options() == []
    options = session.driver_java_options().split()
    assert options == ["-XX:+UseParallelGC", f"-Dlog4j2.configurationFile={session.LOG_CONFIG.as_uri()}"]
    assert session.LOG_CONFIG.is_file()


def test_an_archive_is_mapped_quietly(cache):
    path = class_archive.archive_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"archive")
    options = session.driver_java_options().split()
    assert options[0] == "-XX:+UseParallelGC"
    assert f"-XX:SharedArchiveFile={path}" in options
    # -Xshare:auto: an archive the JVM cannot use is ignored, never fatal.
    assert "-Xshare:auto" in options and "-Xlog:cds=off" in options


def test_the_key_follows_the_java_binary(cache, tmp_path, monkeypatch):
    first = class_archive.archive_path()
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert class_archive.java_binary() == java.resolve()
    assert class_archive.archive_path() not in (None, first)


def test_a_path_with_a_space_is_not_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "my cache"))
    path = class_archive.archive_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"archive")
    assert class_archive.java_options() == []  # extraJavaOptions would split the path


def test_the_environment_overrides_the_options(cache, monkeypatch):
    monkeypatch.setenv("FWPOLICY_DRIVER_JAVA_OPTIONS", "-XX:+UseG1GC")
    assert session.driver_java_options() == "-XX:+UseG1GC"
