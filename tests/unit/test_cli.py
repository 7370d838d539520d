"""The `retail-policy` command: migrations and API keys, run as a user would run them."""

from __future__ import annotations

import json
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


def test_an_unknown_http_server_is_a_configuration_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HTTP_SERVER": "gunicorn", "RETAIL_POLICY_VAR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "configuration error: HTTP_SERVER='gunicorn'" in result.stderr
    assert not (tmp_path / "retail-policy.db").exists()  # refused before migrating anything


def test_keys_list_shows_every_key_but_no_secret(tmp_path: Path) -> None:
    key = run_cli(
        tmp_path,
        "keys",
        "create",
        "--name",
        "pos",
        "--roles",
        "decide",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    )
    listed = run_cli(tmp_path, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["name"] == "pos" and row["roles"] == ["decide"] and row["expires_at"].startswith("2099-01-01")
    assert row["id"] in key.stdout and key.stdout.strip().rsplit("_", 1)[1] not in listed.stdout


def test_keys_rotate_prints_the_new_key_and_revoke_refuses_the_last_admin(tmp_path: Path) -> None:
    old = run_cli(tmp_path, "keys", "create", "--name", "ops", "--roles", "admin").stdout.strip()
    refused = run_cli(tmp_path, "keys", "revoke", "ops")
    assert refused.returncode == 1 and "last active admin key" in refused.stderr
    rotated = run_cli(tmp_path, "keys", "rotate", "ops")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("rp_") and new != old and len(rotated.stdout.splitlines()) == 1
    rows = {row["id"]: row for row in json.loads(run_cli(tmp_path, "keys", "list", "--json").stdout)}
    assert rows[old.split("_")[1]]["revoked_at"] is not None
    assert rows[new.split("_")[1]]["revoked_at"] is None and rows[new.split("_")[1]]["roles"] == ["admin"]
    run_cli(tmp_path, "keys", "create", "--name", "ops-2", "--roles", "admin")
    assert run_cli(tmp_path, "keys", "revoke", new.split("_")[1]).returncode == 0


@pytest.mark.parametrize(
    ("args", "field", "code"),
    [
        (
            ("create", "--name", "x", "--roles", "decide", "--expires-at", "2020-01-01T00:00:00Z"),
            "expires_at",
            2,
        ),
        (("create", "--name", "x", "--roles", "decide", "--expires-at", "soon"), "expires_at", 2),
        (("create", "--name", "has space", "--roles", "decide"), "name", 2),
        (("revoke", "nobody"), "name_or_id", 1),
        (("rotate", "nobody"), "name_or_id", 1),
    ],
)
def test_a_refused_key_command_names_the_field(
    tmp_path: Path, args: tuple[str, ...], field: str, code: int
) -> None:
    result = run_cli(tmp_path, "keys", *args)
    assert result.returncode == code
    assert result.stdout == "" and f"{field}: " in result.stderr
