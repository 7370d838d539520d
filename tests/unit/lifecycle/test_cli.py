"""`retail-policy rulesets ...` on real files and a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.settings import get_settings
from tests.unit.lifecycle.samples import BROKEN_YAML, NAME, transfer_yaml


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_validate_accepts_a_folder_of_valid_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "transfer", "a.yaml", transfer_yaml())
    assert main(["rulesets", "validate", str(tmp_path)]) == 0
    assert "1 of 1 file(s) valid" in capsys.readouterr().out


def test_validate_exits_1_with_located_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", BROKEN_YAML)
    assert main(["rulesets", "validate", str(bad)]) == 1
    assert f"error: {bad}:" in capsys.readouterr().out


def test_test_reports_each_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.yaml", transfer_yaml())
    assert main(["rulesets", "test", str(path), "--engine", "python"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "[python]" in out and "[durable]" not in out


def test_test_exits_1_on_a_failing_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.yaml", transfer_yaml(passing=False))
    assert main(["rulesets", "test", str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_push_then_publish_by_another_person(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "a.yaml", transfer_yaml())
    assert main(["rulesets", "push", str(path), "--as", "alice"]) == 0
    assert main(["rulesets", "publish", NAME, "1", "--as", "bob"]) == 0
    assert main(["rulesets", "list"]) == 0
    assert "active v1" in capsys.readouterr().out


def test_publish_by_the_author_fails(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "a.yaml", transfer_yaml())
    main(["rulesets", "push", str(path), "--as", "alice"])
    assert main(["rulesets", "publish", NAME, "1", "--as", "alice"]) == 1
    assert "four-eyes" in capsys.readouterr().err


def test_pushing_the_same_file_twice_keeps_one_version(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "a.yaml", transfer_yaml())
    main(["rulesets", "push", str(path), "--as", "alice"])
    main(["rulesets", "push", str(path), "--as", "alice"])
    assert "v1: unchanged" in capsys.readouterr().out


def test_diff_prints_changed_rules(database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["rulesets", "push", str(write(tmp_path, "a.yaml", transfer_yaml())), "--as", "alice"])
    main(["rulesets", "push", str(write(tmp_path, "a.yaml", transfer_yaml(limit=100))), "--as", "alice"])
    capsys.readouterr()
    assert main(["rulesets", "diff", NAME, "1", "2"]) == 0
    assert "auto-approve-small" in capsys.readouterr().out
