from __future__ import annotations

import pytest

from seqbridge.config import ConfigError, load_settings


def test_defaults_then_environment_then_overrides():
    defaults = load_settings(environ={})
    assert defaults["MAX_BODY_BYTES"] == 1024 * 1024
    assert defaults["DATABASE_URL"].startswith("sqlite:///") and defaults["DATABASE_URL"].endswith(
        "var/seqbridge.db"
    )
    assert defaults["MAPPINGS_DIR"].endswith("mappings")
    assert defaults["LOG_LEVEL"] == "INFO"

    env = {
        "SEQBRIDGE_DATABASE_URL": "postgresql://x/y",
        "SEQBRIDGE_MAX_BODY_BYTES": "2048",
        "SEQBRIDGE_LOG_LEVEL": "debug",
        "SEQBRIDGE_MAPPINGS_DIR": "/etc/seqbridge/mappings",
    }
    from_env = load_settings(environ=env)
    assert from_env["DATABASE_URL"] == "postgresql://x/y"
    assert from_env["MAX_BODY_BYTES"] == 2048
    assert from_env["LOG_LEVEL"] == "DEBUG"
    assert from_env["MAPPINGS_DIR"] == "/etc/seqbridge/mappings"

    overridden = load_settings(
        environ=env, overrides={"MAX_BODY_BYTES": 10, "DATABASE_URL": "sqlite:///t.db"}
    )
    assert overridden["MAX_BODY_BYTES"] == 10
    assert overridden["DATABASE_URL"] == "sqlite:///t.db"
    assert overridden["LOG_LEVEL"] == "DEBUG"  # untouched settings keep the environment's value


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SEQBRIDGE_MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES must be an integer"),
        ({"SEQBRIDGE_MAX_BODY_BYTES": "-1"}, "must not be negative"),
        ({"SEQBRIDGE_LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"SEQBRIDGE_SQLITE_SYNCHRONOUS": "OFF"}, "SQLITE_SYNCHRONOUS"),
        ({"SEQBRIDGE_SQLITE_CACHE_MB": "0"}, "SQLITE_CACHE_MB must be between 1 and 4096"),
        ({"SEQBRIDGE_SQLITE_CACHE_MB": "5000"}, "SQLITE_CACHE_MB must be between 1 and 4096"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(environ=env)
