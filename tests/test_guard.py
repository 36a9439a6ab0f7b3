"""The suite-wide guard of the root ``conftest.py`` fails a test that leaves process-wide state
changed, for each kind of state it watches (run on a copy of the conftest, in a subprocess)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

#: state name (as the guard reports it) -> one statement leaking it, relative to where it starts
LEAKS = {
    "TensorLy backend": "tl.set_backend("
    "'numpy' if tl.get_backend() != 'numpy' else 'pytorch', local_threadsafe=True)",
    "TensorLy default": "tl.set_backend('pytorch')",
    "TensorLy tenalg backend": "tl.tenalg.set_backend('einsum', local_threadsafe=True)",
    "TensorLy tenalg default": "tl.tenalg.set_backend('einsum')",
    "torch threads": "torch.set_num_threads(torch.get_num_threads() + 1)",
    "torch default dtype": "torch.set_default_dtype(torch.float64)",
    "torch grad mode": "torch.set_grad_enabled(False)",
    "torch deterministic": "torch.use_deterministic_algorithms(True)",
    "matplotlib backend": "matplotlib.use("
    "'svg' if dict.__getitem__(matplotlib.rcParams, 'backend') == 'agg' else 'agg')",
}
if importlib.util.find_spec("jax") is not None:
    LEAKS["jax_enable_x64"] = "import jax; jax.config.update('jax_enable_x64', True)"


def test_the_guard_fails_every_kind_of_leak_and_passes_a_clean_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    # the inner run needs no plugin (a reordering one would let one leak hide another), and
    # its matplotlib starts with no backend chosen
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    leaks = "\n".join(f"def test_{i}():\n    {code}\n" for i, code in enumerate(LEAKS.values()))
    pytester.makepyfile(
        "import matplotlib\nimport tensorly as tl\nimport torch\n\n"
        "def test_clean():\n    with torch.no_grad():\n        tl.tenalg.get_backend()\n\n" + leaks
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(LEAKS) + 1, errors=len(LEAKS))
    # each test's own teardown error names its state
    parts = re.split(r"_+ ERROR at teardown of (test_\d+) _+", result.stdout.str())
    errors = dict(zip(parts[1::2], parts[2::2], strict=True))
    for i, name in enumerate(LEAKS):
        line = next(ln for ln in errors[f"test_{i}"].splitlines() if ln.startswith("E   "))
        assert "changed process-wide state" in line and f"'{name}'" in line, (name, line)
