"""The `retail-policy` command: migrations and API keys, run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "RETAIL_POLICY_VAR": str(tmp_path),
    }
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_db_upgrade_migrates_an_empty_database(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
    assert (tmp_path / "cli.db").exists()


def test_keys_create_prints_the_key_alone_on_stdout(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "keys", "create", "--name", "pos-gateway", "--roles", "decide,stock")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rp_")


@pytest.mark.parametrize("roles", ["decide,owner", ""])
def test_keys_create_refuses_unknown_roles(tmp_path: Path, roles: str) -> None:
    result = run_cli(tmp_path, "keys", "create", "--name", "x", "--roles", roles)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "roles" in result.stderr


def test_a_bad_setting_is_reported_not_raised(tmp_path: Path) -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "service", "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "STOCK_BACKEND": "mongo"},
    )
    assert env_result.returncode == 2
    assert "configuration error: STOCK_BACKEND='mongo'" in env_result.stderr
