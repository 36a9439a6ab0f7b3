"""Every program output quoted in the README and the docs is what the program prints now.

``scripts/docs_outputs.py`` regenerates the quoted blocks; these tests run its ``--check`` on
the real docs, and check on small files that it detects a stale quote, rewrites it, and
respects the tolerance and ``head`` options.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "docs_outputs.py"


def _load():
    spec = importlib.util.spec_from_file_location("docs_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_outputs"] = module
    spec.loader.exec_module(module)
    return module


docs_outputs = _load()


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return path


PAGE = """# page

```python
x = 6 * 7
print("answer", x)
```

<!-- output -->
```text
{first}
```

```python
print(x / 7)
print("second line")
```

<!-- output: tol 0.01 -->
```text
{second}
```

<!-- output: $ python -c "print('a'); print('b')" | head 1 -->
```text
{third}
```
"""


def test_current_quotes_pass(tmp_path, capsys):
    path = _doc(tmp_path, PAGE.format(first="answer 42", second="6.001\nsecond line", third="a"))
    assert docs_outputs.main(["--check", str(path)]) == 0


@pytest.mark.parametrize(
    "first, second, third",
    [
        ("answer 41", "6.0\nsecond line", "a"),  # python output differs
        ("answer 42", "6.02\nsecond line", "a"),  # beyond the tolerance
        ("answer 42", "6.0\nsecond", "a"),  # text differs, numbers equal
        ("answer 42", "6.0\nsecond line", "a\nb"),  # head 1 cuts the command's output
    ],
)
def test_stale_quote_is_reported_then_rewritten(tmp_path, capsys, first, second, third):
    path = _doc(tmp_path, PAGE.format(first=first, second=second, third=third))
    assert docs_outputs.main(["--check", str(path)]) == 1
    assert "stale output at" in capsys.readouterr().out
    assert docs_outputs.main([str(path)]) == 0
    assert docs_outputs.main(["--check", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert "answer 42" in text and "\na\n```" in text


def test_no_run_block_is_skipped(tmp_path):
    page = "```python\nprint('x')\n```\n\n<!-- no-run -->\n```python\nraise SystemExit(3)\n```\n\n"
    page += "<!-- output -->\n```text\nx\n```\n"
    assert docs_outputs.main(["--check", str(_doc(tmp_path, page))]) == 0


def test_failing_snippet_names_the_file(tmp_path):
    page = "```python\nraise ValueError('boom')\n```\n\n<!-- output -->\n```text\n```\n"
    with pytest.raises(SystemExit, match="page.md.*failed"):
        docs_outputs.main(["--check", str(_doc(tmp_path, page))])


def test_docs_quote_what_the_code_prints_now(capsys):
    """The real README and docs (runs `sekron compare` and the docs' snippets: ~1 min)."""
    rc = docs_outputs.main(["--check"])
    assert rc == 0, capsys.readouterr().out
