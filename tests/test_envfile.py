"""var/hooks.env: the CLI and `seqbridge serve` read it as scripts/up does; the environment wins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqbridge.envfile import EnvFileError, load_env_file

ROOT = Path(__file__).resolve().parents[1]
#: What scripts/up writes: one random secret per variable the shipped mappings read.
SHIPPED_SECRETS = (
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "TWILIO_AUTH_TOKEN",
    "TYPEFORM_SECRET",
    "ACTIVECAMPAIGN_HOOK_TOKEN",
    "ZAPIER_HOOK_TOKEN",
    "HUBSPOT_CLIENT_SECRET",
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SHIPPED_SECRETS and not k.startswith("SEQBRIDGE_")}
    return {**env, **extra}


def _seqbridge(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seqbridge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_values_in_the_file_fill_in_what_the_environment_lacks(tmp_path):
    path = tmp_path / "hooks.env"
    path.write_text("A=from-file\nB='quoted value'\n# a comment\nexport C=exported\nD=${C}-x\n")
    environ = {"A": "from-env"}
    assert load_env_file(str(path), environ) == path
    assert environ == {"A": "from-env", "B": "quoted value", "C": "exported", "D": "exported-x"}


def test_which_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_env_file(None, {}) is None  # no var/hooks.env: nothing, and no error
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "hooks.env").write_text("X=default\n")
    (tmp_path / "other.env").write_text("X=named\n")
    environ: dict[str, str] = {}
    assert load_env_file(None, environ) == Path("var/hooks.env") and environ == {"X": "default"}
    environ = {"SEQBRIDGE_ENV_FILE": str(tmp_path / "other.env")}
    load_env_file(None, environ)
    assert environ["X"] == "named"
    environ = {"SEQBRIDGE_ENV_FILE": ""}  # empty: read none
    assert load_env_file(None, environ) is None and "X" not in environ
    with pytest.raises(EnvFileError, match=r"nope\.env"):
        load_env_file(str(tmp_path / "nope.env"), {})
    with pytest.raises(EnvFileError, match=r"missing\.env"):
        load_env_file(None, {"SEQBRIDGE_ENV_FILE": "missing.env"})


@pytest.mark.slow
def test_before_going_live_commands_work_after_scripts_up(tmp_path):
    # As after ./scripts/up: the shipped mappings, and their secrets in var/hooks.env only.
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "hooks.env").write_text(
        "".join(f"{name}=secret-{n}\n" for n, name in enumerate(SHIPPED_SECRETS))
    )
    env = _clean_env()
    validate = _seqbridge("mappings", "validate", cwd=tmp_path, env=env)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "mappings are valid" in validate.stdout
    tested = _seqbridge("mappings", "test", cwd=tmp_path, env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # --env-file names another file; a named file that is missing is an error, not a silent default.
    (tmp_path / "var" / "hooks.env").rename(tmp_path / "prod.env")
    named = _seqbridge(
        "--env-file", str(tmp_path / "prod.env"), "mappings", "validate", cwd=tmp_path, env=env
    )
    assert named.returncode == 0, named.stdout + named.stderr
    missing = _seqbridge("--env-file", "absent.env", "mappings", "validate", cwd=tmp_path, env=env)
    assert missing.returncode != 0 and "absent.env" in missing.stderr
    without = _seqbridge("mappings", "validate", cwd=tmp_path, env=env)
    assert without.returncode == 1 and "WHATSAPP_APP_SECRET is not set" in without.stdout
