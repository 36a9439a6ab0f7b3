"""The public names of every public module (as array-api-extra checks its own): ``__all__`` is
sorted, every name in it exists, and every public function or class a module defines is in it."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = [
    "sekron",
    "sekron.cli",
    "sekron.compare",
    "sekron.data",
    "sekron.decomposition",
    "sekron.interop",
    "sekron.jax",
    "sekron.kron",
    "sekron.random",
    "sekron.refinement",
    "sekron.search",
    "sekron.structures",
    "sekron.tensor",
    "sekron.testing",
    "sekron.torch",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_complete_and_resolves(name: str) -> None:
    if name == "sekron.torch":
        pytest.importorskip("torch")
    if name == "sekron.jax":
        pytest.importorskip("jax")
    mod = importlib.import_module(name)
    names = list(mod.__all__)
    assert names == sorted(names), f"{name}.__all__ is not sorted"
    assert len(set(names)) == len(names)
    for n in names:
        assert hasattr(mod, n), f"{name}.__all__ names {n!r}, which does not exist"
    defined = {
        n
        for n, obj in vars(mod).items()
        if not n.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", "").startswith(name)
    }
    missing = defined - set(names)
    assert not missing, f"{name} defines public {sorted(missing)} outside __all__"
