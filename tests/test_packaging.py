"""The README's promises: its test command is what CI runs, and its example runs as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_cmd = [b for b in bash_blocks() if "pytest" in b]
    assert len(test_cmd) == 1, "README must give exactly one test command"
    ci_lines = [
        ln
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert test_cmd[0].strip() in [ln.strip() for ln in ci_lines]


def test_readme_main_job_is_sekron_compare() -> None:
    main = [b for b in bash_blocks() if "pytest" not in b]
    assert len(main) == 1 and main[0].strip().endswith("sekron compare")


def test_readme_python_example_runs_and_prints_what_it_says() -> None:
    code = re.findall(r"```python\n(.*?)\n```", README, flags=re.S)[0]
    assert len(code.splitlines()) <= 10
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(
        "nested SeKronTensor of shape (64, 64, 3, 3): 3 factors, ranks (8, 4)"
    )
    reported, measured = map(float, lines[1].split())
    assert abs(reported - measured) < 1e-10


def test_version_is_written_once_in_pyproject() -> None:
    import tomllib

    import sekron

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert sekron.__version__ == declared
    init = (ROOT / "src" / "sekron" / "__init__.py").read_text()
    assert declared not in init


def test_readme_docs_command_installs_what_the_api_pages_import() -> None:
    """The docs build imports sekron.torch (and sekron.jax): the documented command must install
    a pinned CPU torch first and the torch/jax extras, and build with warnings as errors."""
    line = next(ln for ln in README.splitlines() if "sphinx-build" in ln)
    assert "pip install torch==2.13.0 &&" in line
    assert '".[docs,torch,jax]"' in line and "sphinx-build -W" in line
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert "find_spec(m) is None" in conf and "torch==2.13.0" in conf


def test_the_slow_first_files_exist_and_ci_keeps_their_order() -> None:
    """The root conftest's SLOW_FIRST names test files that exist (a renamed file would fall
    back to xdist's order silently), and the test command turns xdist's reorder off, without
    which the list orders nothing."""
    import ast

    tree = ast.parse((ROOT / "conftest.py").read_text(encoding="utf-8"))
    (names,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["SLOW_FIRST"]
    ]
    assert names and len(set(names)) == len(names)
    assert all((ROOT / "tests" / name).is_file() for name in names), names
    command = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "--dist loadfile --no-loadscope-reorder" in command
