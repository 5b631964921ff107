"""The README cannot drift: the quick start is exactly two commands and CI runs the second, the first one's main job
and the Python example run as written, and every option the other command lines use exists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(section: str, lang: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", body, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    main_job, tests = (b.strip() for b in blocks("Quick start", "bash"))
    assert "\n" not in main_job and "\n" not in tests
    assert main_job.startswith("bash .ci/setup && ") and tests == "bash .ci/run"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/setup" in ci and ".venv/bin/pytest" in ci


@pytest.mark.slow
def test_main_job_and_python_example_run_as_written(tmp_path):
    main_job = blocks("Quick start", "bash")[0].split("&& ", 1)[1]  # setup is what the test environment did
    argv = shlex.split(main_job)
    assert argv[0] == ".venv/bin/msvit-edge"
    result = subprocess.run(
        [sys.executable, "-m", "msvit_edge", *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| engine | status | backend | precision |" in result.stdout
    assert (tmp_path / "runs/demo/report/report.md").is_file()
    assert (tmp_path / "runs/demo/report/overlays/overlays.png").is_file()
    (example,) = blocks("Python", "python")
    run = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    classes, counts = run.stdout.strip().splitlines()[-1].split("] [")
    assert len(classes.strip("[").split()) == 4 and len(counts.strip("]").split()) == 4


def used_options() -> dict[str, set[str]]:
    """``--options`` of each ``msvit-edge COMMAND`` in the README's code: command blocks and inline code."""
    code = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S) + re.findall(r"`([^`\n]+)`", README))
    used: dict[str, set[str]] = {}
    for command, rest in re.findall(r"msvit-edge (\w+)((?: [^\n]*)?)", code):
        used.setdefault(command, set()).update(re.findall(r"(--[a-z][a-z0-9-]*)", rest))
    return used


def test_every_option_the_readme_uses_exists():
    used = used_options()
    assert {"train", "eval", "export", "build", "bench", "demo", "doctor"} <= set(used)
    for command, options in used.items():
        result = subprocess.run([sys.executable, "-m", "msvit_edge", command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr[-1000:])
        missing = {o for o in options if o not in result.stdout}
        assert not missing, f"README uses {sorted(missing)} that `msvit-edge {command}` does not have"
