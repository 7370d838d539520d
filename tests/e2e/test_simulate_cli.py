"""The `simulate` command end to end, in a child process, as a planner runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "simulators" / "scenarios" / "small.yaml"
VARIANT = ROOT / "tests" / "unit" / "simulators" / "rulesets" / "dc-only.yaml"


def _simulate(*args: str, module: str = "simulators") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "simulate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_simulate_writes_kpis_and_a_report_and_replays_its_recording(tmp_path: Path) -> None:
    first = _simulate(str(SMALL), "--ruleset", str(VARIANT), "--out", str(tmp_path / "a"),
                      "--record", str(tmp_path / "events.csv"), "--no-progress")  # fmt: skip
    assert first.returncode == 0, first.stderr
    document = json.loads((tmp_path / "a" / "kpis.json").read_text())
    assert [run["view"] for run in document["runs"]] == ["fragmented", "realtime"]
    assert "<svg" in (tmp_path / "a" / "report.html").read_text()
    assert "dc-only@dc-only / fragmented" in first.stdout
    again = _simulate(str(SMALL), "--ruleset", str(VARIANT), "--out", str(tmp_path / "b"),
                      "--events", str(tmp_path / "events.csv"), "--no-progress")  # fmt: skip
    assert again.returncode == 0, again.stderr
    replayed = json.loads((tmp_path / "b" / "kpis.json").read_text())
    assert replayed["runs"] == document["runs"]


def test_simulate_is_a_command_of_the_service_cli(tmp_path: Path) -> None:
    result = _simulate(str(SMALL), "--out", str(tmp_path), "--seed", "11", "--no-progress", module="service")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "kpis.json").read_text())["scenario"]["seed"] == 11


def test_a_bad_scenario_is_refused_with_the_failing_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("duration_hours: 48", "duration_hours: soon"))
    result = _simulate(str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "$.duration_hours" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_ruleset_file_is_refused(tmp_path: Path) -> None:
    result = _simulate(str(SMALL), "--ruleset", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
