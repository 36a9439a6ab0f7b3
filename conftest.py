"""The suite-wide guard (tests and the doctests under ``src/sekron``): no test may leave
process-wide state changed (:func:`_process_state`)."""

from __future__ import annotations

import os

# Under pytest-xdist (README: ``-n 2``) each worker computes on one thread: two workers with two
# threads each oversubscribed the 2 cores. Set before numpy and torch start their thread pools
# (XLA's CPU pool has no such switch); subprocesses the tests start inherit it. A test that sets
# its own count still can.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import tensorly as tl  # noqa: E402

# imported up front, so that the guard checks their state in every test (a module first imported
# during a test could change its state in the same test unseen: TensorLy's jax backend module
# switches jax_enable_x64 on as it is imported)
for _name in ("torch", "jax"):
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)


#: The slowest test files (seconds of a two-worker run), in this order before all others: with
#: ``--dist loadfile --no-loadscope-reorder`` the workers take files in collection order, so the
#: longest start first and the short ones fill in at the end (longest-processing-time first).
#: xdist's own reorder (most tests first) started the experiment's 4-minute run mid-suite.
SLOW_FIRST = (
    "test_experiment.py",
    "test_docs_outputs.py",
    "test_jax_conv.py",
    "test_search.py",
    "test_conv_benchmarks.py",
    "test_cluster.py",
    "test_joint.py",
    "test_cluster_faults.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put :data:`SLOW_FIRST`'s files first (a stable sort: every file's tests keep their order
    and stay together)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _process_state() -> dict[str, Any]:
    """What no test may leave changed: TensorLy's backend and its tenalg backend (this thread's,
    and the process-wide default a new thread sees); torch's thread count, default dtype, grad
    mode and deterministic mode; matplotlib's backend; jax's x64 flag. (Importing tltorch
    in-process once set TensorLy's default to pytorch for the rest of the suite, and 20 later
    tests failed far from the cause.)"""
    seen: list[str] = []
    thread = threading.Thread(
        target=lambda: seen.extend((tl.get_backend(), tl.tenalg.get_backend()))
    )
    thread.start()
    thread.join()
    state: dict[str, Any] = {
        "TensorLy backend": tl.get_backend(),
        "TensorLy default": seen[0],
        "TensorLy tenalg backend": tl.tenalg.get_backend(),
        "TensorLy tenalg default": seen[1],
    }
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        state["torch threads"] = torch.get_num_threads()
        state["torch default dtype"] = torch.get_default_dtype()
        state["torch grad mode"] = torch.is_grad_enabled()
        state["torch deterministic"] = torch.are_deterministic_algorithms_enabled()
    mpl = sys.modules.get("matplotlib")
    if mpl is not None and isinstance(getattr(mpl, "rcParams", None), dict):
        # read without resolving it (rcParams["backend"] would pick one and import pyplot):
        # a name, or matplotlib's not-yet-chosen sentinel
        state["matplotlib backend"] = dict.__getitem__(mpl.rcParams, "backend")
    jax = sys.modules.get("jax")
    if jax is not None and hasattr(jax, "config"):
        state["jax_enable_x64"] = bool(jax.config.read("jax_enable_x64"))
    return state


@pytest.fixture(autouse=True)
def _leaves_process_state() -> Any:
    """Every test (sekron's calls and the tests' own code) leaves :func:`_process_state` as it
    found it; a module imported during the test is checked from then on."""
    before = _process_state()
    yield
    after = _process_state()
    changed = {
        k: (before[k], after[k]) for k in before.keys() & after.keys() if before[k] != after[k]
    }
    assert not changed, f"the test changed process-wide state (before, after): {changed}"
