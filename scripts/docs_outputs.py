"""Regenerate (or check) every program output quoted in the README and the docs.

A quoted output is a fenced ``text`` block preceded by a marker comment::

    <!-- output -->                      the stdout of this file's python blocks since the
                                         previous marker (the blocks of one file run in order,
                                         in one namespace, like a notebook)
    <!-- output: $ sekron compare -->    the stdout of a shell command (run from the repository
                                         root; its arguments are split like a shell's)
    <!-- output: $ sekron compare | head 17 -->   only its first 17 lines

For python outputs, options follow the colon, separated by ``;``: ``tol 0.02`` compares the
numbers in the block with that absolute tolerance instead of exactly (for outputs that depend
on floating point order, e.g. a few epochs of fine-tuning). A python block preceded by
``<!-- no-run -->`` is not executed. Files without markers are not executed at all.

Usage::

    python scripts/docs_outputs.py            # rewrite every quoted output in place
    python scripts/docs_outputs.py --check    # exit 1 and show a diff when one is stale

The test suite runs ``--check`` (tests/test_docs_outputs.py), so the docs cannot go stale.
Python blocks run in a scratch directory (files they write are thrown away), with the
repository's ``src`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("README.md", "docs/*.md")
MARKER = re.compile(r"^<!-- output(?::\s*(?P<spec>.*?))?\s*-->\s*$")
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^(`{3,})(\S*)")
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:e[+-]?\d+)?")
SEP = "\x00sekron-docs-output\x00"


@dataclass
class Quote:
    """One quoted output: where its text block is and how to produce it."""

    path: Path
    start: int  # index of the first line inside the text block
    end: int  # index of the closing fence
    command: list[str] | None  # None: the python blocks before it
    head: int | None
    tol: float | None
    chunk: int  # for python quotes: which output chunk of the file


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _parse_spec(spec: str | None, where: str) -> tuple[list[str] | None, int | None, float | None]:
    command: list[str] | None = None
    head: int | None = None
    tol: float | None = None
    spec = (spec or "").strip()
    parts = [spec] if spec.startswith("$") else [p.strip() for p in spec.split(";")]
    for part in parts:
        if not part:
            continue
        if part.startswith("$"):
            cmd, _, rest = part[1:].partition("|")
            command = shlex.split(cmd)
            if rest.strip():
                word, _, n = rest.strip().partition(" ")
                if word != "head" or not n.strip().isdigit():
                    raise SystemExit(f"{where}: only '| head N' may follow a command")
                head = int(n)
        elif part.startswith("tol "):
            tol = float(part[4:])
        else:
            raise SystemExit(f"{where}: unknown marker option {part!r}")
    return command, head, tol


def _scan(path: Path) -> tuple[list[str], list[Quote], list[str]]:
    """The file's lines, its quotes, and the python program that prints each chunk."""
    lines = path.read_text(encoding="utf-8").split("\n")
    quotes: list[Quote] = []
    program: list[str] = []
    chunk = 0
    pending: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m:
            pending = m.group("spec") or ""
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            if line.strip():
                pending = None if line.strip() != NO_RUN else pending
            i += 1
            continue
        close = next(
            (j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1))), None
        )
        if close is None:
            raise SystemExit(f"{path}:{i + 1}: unclosed code block")
        lang = fence.group(2)
        no_run = i > 0 and lines[i - 1].strip() == NO_RUN
        if lang == "python" and not no_run:
            program.append("\n".join(lines[i + 1 : close]))
        elif lang == "text" and pending is not None:
            where = f"{_rel(path)}:{i}"
            command, head, tol = _parse_spec(pending, where)
            quotes.append(Quote(path, i + 1, close, command, head, tol, chunk))
            if command is None:
                program.append(f"print({SEP!r}, end='')")
                chunk += 1
        pending = None
        i = close + 1
    return lines, quotes, program


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    env["COLUMNS"] = "100"
    return env


def _run(argv: list[str], where: str, cwd: Path = ROOT) -> str:
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    elif argv[0] == "sekron":  # this interpreter's sekron, whatever is on PATH
        argv = [sys.executable, "-m", "sekron.cli", *argv[1:]]
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{where}: {shlex.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _python_chunks(path: Path, program: list[str]) -> list[str]:
    source = "\n\n".join(program)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "snippets.py"
        script.write_text(source, encoding="utf-8")
        out = _run(["python", str(script)], _rel(path), cwd=Path(tmp))
    return out.split(SEP)


def _close(old: str, new: str, tol: float) -> bool:
    """Equal but for numbers that differ by at most ``tol``."""
    if NUMBER.sub("#", old) != NUMBER.sub("#", new):
        return False
    a, b = NUMBER.findall(old), NUMBER.findall(new)
    return all(
        abs(float(x.replace(",", "")) - float(y.replace(",", ""))) <= tol
        for x, y in zip(a, b, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale outputs, write nothing")
    parser.add_argument("files", nargs="*", help="files to process (default: README and docs)")
    args = parser.parse_args(argv)
    paths = [ROOT / f for f in args.files] or sorted(p for g in FILES for p in ROOT.glob(g))
    cache: dict[tuple[str, ...], str] = {}
    stale = 0
    for path in paths:
        lines, quotes, program = _scan(path)
        if not quotes:
            continue
        chunks = _python_chunks(path, program) if any(q.command is None for q in quotes) else []
        changed = False
        for q in reversed(quotes):  # from the end, so indices stay valid
            if q.command is None:
                text = chunks[q.chunk]
            else:
                key = tuple(q.command)
                if key not in cache:
                    cache[key] = _run(q.command, f"{_rel(path)}:{q.start}")
                text = cache[key]
            new = text.rstrip("\n").split("\n")
            if q.head is not None:
                new = new[: q.head]
            old = lines[q.start : q.end]
            same = old == new or (
                q.tol is not None and _close("\n".join(old), "\n".join(new), q.tol)
            )
            if same:
                continue
            stale += 1
            changed = True
            where = f"{_rel(path)}:{q.start + 1}"
            print(f"stale output at {where}:")
            sys.stdout.writelines(
                f"  {d}\n" for d in difflib.unified_diff(old, new, "quoted", "now", lineterm="")
            )
            lines[q.start : q.end] = new
        if changed and not args.check:
            path.write_text("\n".join(lines), encoding="utf-8")
    if args.check and stale:
        print(f"{stale} quoted output(s) are stale: run python scripts/docs_outputs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
