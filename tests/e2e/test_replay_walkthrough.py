"""The "Replay your own history" walk-through of docs/simulator.md, run command by command as written.

Each `$ ` line of the section's console blocks runs in a shell (from a directory that sees the repository's
`simulators/` as the page's repository root does, so that `var/` is the test's own); the lines after it are
the output the page promises: each must appear, in order, with `...` standing for elided text. A command
whose promised output is an `error:` must exit 2, every other one 0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "simulator.md"


def walkthrough() -> list[tuple[str, list[str]]]:
    """(command, promised output lines) of every console block of the walk-through, in order."""
    text = DOC.read_text()
    section = text.split("## Replay your own history", 1)[1].split("\n## ", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip():
                steps[-1][1].append(line)
    return steps


def _pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part.strip()) for part in line.split("...")))


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    steps = walkthrough()
    assert len(steps) == 2
    (tmp_path / "simulators").symlink_to(ROOT / "simulators")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    for command, promised in steps:
        assert command.startswith("python -m simulators simulate ")
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        shown = (done.stdout + done.stderr).splitlines()
        expected_status = 2 if promised and promised[0].startswith("error:") else 0
        assert done.returncode == expected_status, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        at = 0
        for line in promised:
            pattern = _pattern(line)
            while at < len(shown) and not pattern.fullmatch(shown[at].strip()):
                at += 1
            assert at < len(shown), f"{line!r} not in the output of {command!r}:\n" + "\n".join(shown)
            at += 1
    document = json.loads((tmp_path / "var" / "simulations" / "replay" / "kpis.json").read_text())
    assert document["events"]["skipped"] == {
        "order_line": {"unknown_sku": 1},
        "sale": {"bad_channel": 1, "unknown_location": 2},
    }
    assert (document["events"]["read"], document["events"]["replayed"]) == (74, 71)
    for run in document["runs"]:
        assert run["conservation"]["holds"]
        assert run["events_skipped"]["sale"] == {"bad_channel": 1, "unknown_location": 2}
