"""The suite-wide guard of the root ``conftest.py`` fails a test that leaves process-wide state
changed, for each kind of state it watches (run on a copy of the conftest, in a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

LEAKS = {
    "TensorLy backend": "tl.set_backend('numpy', local_threadsafe=True); "
    "tl.set_backend('pytorch', local_threadsafe=True)",
    "TensorLy default": "tl.set_backend('pytorch')",
    "TensorLy tenalg backend": "tl.tenalg.set_backend('einsum')",
    "torch threads": "torch.set_num_threads(torch.get_num_threads() + 1)",
    "torch default dtype": "torch.set_default_dtype(torch.float64)",
    "torch grad mode": "torch.set_grad_enabled(False)",
    "matplotlib backend": "matplotlib.use('Agg')",
}


def test_the_guard_fails_every_kind_of_leak_and_passes_a_clean_test(
    pytester: pytest.Pytester,
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    body = "\n".join(f"def test_{i}():\n    {code}\n" for i, code in enumerate(LEAKS.values()))
    pytester.makepyfile(
        "import matplotlib\nimport tensorly as tl\nimport torch\n\n"
        + body
        + "\ndef test_clean():\n    with torch.no_grad():\n        pass\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(LEAKS) + 1, errors=len(LEAKS))
    out = result.stdout.str()
    for name in LEAKS:
        assert f"'{name}'" in out, name
