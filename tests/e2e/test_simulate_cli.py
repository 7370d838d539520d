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


EXAMPLE = ROOT / "simulators" / "examples" / "replay"


def _replay(
    tmp_path: Path, log_text: bytes | None = None, *args: str, start: str | None = None
) -> subprocess.CompletedProcess[str]:
    scenario = EXAMPLE / "scenario.yaml"
    if start is not None:
        for name in ("locations.csv", "items.csv", "stock.csv"):
            (tmp_path / name).write_bytes((EXAMPLE / name).read_bytes())
        scenario = tmp_path / "scenario.yaml"
        scenario.write_text(
            (EXAMPLE / "scenario.yaml").read_text().replace("start: 2026-11-20", f"start: {start}")
        )
    log = EXAMPLE / "history.csv"
    if log_text is not None:
        log = tmp_path / "log.csv"
        log.write_bytes(log_text)
    return _simulate(
        str(scenario), "--events", str(log), "--out", str(tmp_path / "out"), "--no-progress", *args
    )


def test_a_log_that_skips_too_much_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = _replay(tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: 3 of the 74 events of history.csv (4.05 %) would be skipped")
    assert "till sales: 1 bad channel, 2 unknown location" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_skipped_events_show_on_stdout_and_in_the_kpis(tmp_path: Path) -> None:
    result = _replay(tmp_path, None, "--max-skipped", "0.05")
    assert result.returncode == 0, result.stderr
    assert "skipped 3 of 74 events of history.csv (4.05 %)\n  order lines: 1 unknown SKU\n" in result.stdout
    assert "  till sales: 1 bad channel, 2 unknown location\n" in result.stdout
    document = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert document["runs"][0]["events_skipped"] == {
        "order_line": {"unknown_sku": 1},
        "sale": {"bad_channel": 1, "unknown_location": 2},
    }


def test_a_wrong_start_year_exits_2_saying_the_log_is_outside_the_horizon(tmp_path: Path) -> None:
    result = _replay(tmp_path, None, "--max-skipped", "1", start="2025-11-20")
    assert result.returncode == 2
    assert result.stderr == (
        "error: none of the 74 events of history.csv falls within the scenario's horizon, 2025-11-20 00:00 UTC "
        "to 2025-11-22 00:00 UTC (its start and duration_hours); the log runs from 2026-11-20 08:14 UTC to "
        "2026-11-21 19:44 UTC. Check the scenario's start\n"
    )


def test_a_bad_value_and_a_bad_byte_exit_2_naming_the_line(tmp_path: Path) -> None:
    head = b"time,type,id,channel,store,sku,qty\n2026-11-20T10:00:00Z,sale,S1,store_pos,N-01,MUG-1,1\n"
    result = _replay(tmp_path, head + b"2026-11-20T11:00:00Z,sale,S2,store_pos,N-01,MUG-1,two\n")
    assert result.returncode == 2
    assert result.stderr == f'error: {tmp_path / "log.csv"}: line 3, qty: expected an integer, got "two"\n'
    result = _replay(tmp_path, head + b"2026-11-20T11:00:00Z,sale,S2,store_pos,N-0\xe9,MUG-1,1\n")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {tmp_path / 'log.csv'}: line 3: not UTF-8 text (byte 0xe9 at byte 43 of the line); "
        "save the file as UTF-8\n"
    )


def test_a_bad_share_option_exits_2(tmp_path: Path) -> None:
    result = _replay(tmp_path, None, "--max-skipped", "150%")
    assert result.returncode == 2
    assert "--max-skipped 150%: expected a share in 0..1" in result.stderr
