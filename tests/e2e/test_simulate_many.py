"""`simulate` with several versions on several seeds and processes, end to end, in a child process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_simulate_cli import ROOT, SMALL, VARIANT, _simulate

NEAREST = ROOT / "tests" / "unit" / "simulators" / "rulesets" / "nearest-anywhere.yaml"


def test_versions_on_many_seeds_give_the_same_results_on_one_process_or_two(tmp_path: Path) -> None:
    common = [str(SMALL), "--ruleset", str(VARIANT), "--ruleset", f"nearest-anywhere@{NEAREST}",
              "--seeds", "1-3", "--no-progress"]  # fmt: skip
    one = _simulate(*common, "--jobs", "1", "--out", str(tmp_path / "one"))
    two = _simulate(*common, "--jobs", "2", "--out", str(tmp_path / "two"))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert (tmp_path / "one" / "kpis.json").read_bytes() == (tmp_path / "two" / "kpis.json").read_bytes()
    document = json.loads((tmp_path / "two" / "kpis.json").read_text())
    assert document["seeds"] == [1, 2, 3]
    assert [entry["seed"] for entry in document["per_seed"]] == [1, 2, 3]
    # every version on every seed and view, the seeds' runs different from each other
    assert {len(entry["runs"]) for entry in document["per_seed"]} == {4}
    assert len({entry["runs"][0]["kpis"]["orders"] for entry in document["per_seed"]}) > 1
    # the first seed's runs in full, as a one-seed run gives them
    single = _simulate(str(SMALL), "--ruleset", str(VARIANT), "--ruleset", f"nearest-anywhere@{NEAREST}",
                       "--seed", "1", "--no-progress", "--out", str(tmp_path / "single"))  # fmt: skip
    assert single.returncode == 0, single.stderr
    assert json.loads((tmp_path / "single" / "kpis.json").read_text())["runs"] == document["runs"]
    lost = document["aggregate"][0]["kpis"]["lost_units"]
    values = [entry["runs"][0]["kpis"]["lost_units"] for entry in document["per_seed"]]
    assert (lost["min"], lost["max"], lost["mean"]) == (min(values), max(values), round(sum(values) / 3, 4))
    assert "3 seeds (1-3)" in two.stdout
    assert "nearest-anywhere@nearest-anywhere / realtime against dc-only@dc-only / realtime" in two.stdout
    assert "noise" in two.stdout
    assert "Over 3 seeds" in (tmp_path / "two" / "report.html").read_text()


def test_one_seed_on_two_processes_gives_the_one_process_document(tmp_path: Path) -> None:
    common = [
        str(SMALL),
        "--ruleset",
        str(VARIANT),
        "--ruleset",
        f"nearest-anywhere@{NEAREST}",
        "--no-progress",
    ]
    one = _simulate(*common, "--out", str(tmp_path / "one"))
    two = _simulate(*common, "--jobs", "2", "--out", str(tmp_path / "two"))
    assert one.returncode == two.returncode == 0, two.stderr
    assert (tmp_path / "one" / "kpis.json").read_bytes() == (tmp_path / "two" / "kpis.json").read_bytes()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seeds", "20-1"], "--seeds 20-1: the range 20-1 ends before it starts"),
        (["--seeds", "one-five"], "is not a seed or a range of seeds"),
        (["--seeds", "1-3", "--seed", "4"], "--seed and --seeds: give one of them"),
        (["--seeds", "1-2", "--record", "x.csv"], "--record with several seeds"),
        (["--jobs", "0"], "--jobs 0: give at least 1 process"),
    ],
)
def test_bad_seeds_or_jobs_exit_2_with_a_plain_message(tmp_path: Path, args: list[str], words: str) -> None:
    result = _simulate(str(SMALL), *args, "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
