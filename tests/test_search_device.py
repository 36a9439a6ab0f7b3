"""search() of a torch tensor on a GPU solves its Gram eigenvalue problems on the tensor's
device (batched ``torch.linalg.eigvalsh``). No GPU here: the same path is forced for torch CPU
tensors and checked against the numpy path (``benchmarks/gpu_check.py`` times it on a GPU)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from sekron.data.digits_cnn import WEIGHTS_PATH
from sekron.search import search

torch = pytest.importorskip("torch")
kernels = importlib.import_module("sekron.search._kernels")


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    with np.load(WEIGHTS_PATH.with_suffix(".npz"), allow_pickle=False) as data:
        return data["features.2.weight"].astype(np.float64)


@pytest.fixture
def device_path(monkeypatch) -> list[int]:
    """Every torch tensor takes the device path; returns the eigenproblems solved by torch."""
    solved: list[int] = []
    eigvalsh, eigh = torch.linalg.eigvalsh, torch.linalg.eigh

    def counting_eigvalsh(G: Any) -> Any:
        solved.append(G.shape[0])
        return eigvalsh(G)

    def counting_eigh(G: Any) -> Any:
        solved.append(1)
        return eigh(G)

    for name in ("sekron.search._api", "sekron.search._remote"):
        monkeypatch.setattr(
            importlib.import_module(name), "on_device", lambda t: isinstance(t, torch.Tensor)
        )
    monkeypatch.setattr(torch.linalg, "eigvalsh", counting_eigvalsh)
    monkeypatch.setattr(torch.linalg, "eigh", counting_eigh)
    return solved


def test_only_cuda_tensors_take_the_device_path(weight) -> None:
    assert not kernels.on_device(weight)
    assert not kernels.on_device(torch.from_numpy(weight))
    assert kernels.on_device(torch.empty(2, 2, device="meta")) is False


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_device_path_gives_the_numpy_search_to_rounding(weight, device_path, dtype) -> None:
    W = weight.astype(dtype)
    kw: dict[str, Any] = dict(compression=4, progress=False, refine=0, max_configs=300)
    ref = search(W, **kw)
    assert device_path == []  # numpy input never takes it
    res = search(torch.from_numpy(W), **kw)
    assert sum(device_path) > 100  # level-1 spectra and level-2 branches, solved by torch
    tol = 1e-10 if dtype == "float64" else 1e-4
    assert (res.best.shapes, res.best.form, res.best.ranks) == (
        ref.best.shapes,
        ref.best.form,
        ref.best.ranks,
    )
    assert res.best.rel_error == pytest.approx(ref.best.rel_error, rel=tol)
    errors = {(c.shapes, c.form): c.rel_error for c in ref.all}
    common = [c for c in res.all if (c.shapes, c.form) in errors]
    if dtype == "float64":  # the same candidates (float32 pruning near ties may differ)
        assert len(common) == len(ref.all) == len(res.all)
    assert len(common) >= 0.95 * len(ref.all)
    for c in common:
        assert c.rel_error == pytest.approx(errors[c.shapes, c.form], rel=tol, abs=tol)
    st = res.best.to_sekron()
    assert isinstance(st.factors[0], torch.Tensor)
    assert abs(st.rel_error - res.best.rel_error) < tol
