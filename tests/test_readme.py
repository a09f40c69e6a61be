"""The README's example must run as written, and its test command must be the CI's."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(marker: str) -> str:
    tail = README.split(marker, 1)[1]
    match = re.search(r"```[a-z]*\n(.*?)```", tail, re.S)
    assert match, f"no code block after {marker!r}"
    return match.group(1)


def test_readme_example_runs():
    namespace: dict = {}
    exec(compile(_block_after("<!-- readme-example"), "README.md", "exec"), namespace)
    scores = namespace["scores"]
    assert scores.shape == (64,)
    assert bool((scores == scores).all())  # finite, not NaN


def test_ci_runs_the_readme_test_command():
    awk = (
        "awk '/<!-- test-command/{f=1; next} f && /^```/{n++; if (n == 2) exit; next} "
        "f && n == 1 {print; exit}' README.md"
    )
    out = subprocess.run(awk, shell=True, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _block_after("<!-- test-command").strip()
    assert "README.md" in (ROOT / ".ci" / "run").read_text()
