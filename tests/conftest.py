"""Shared fixtures: a backend fixture over numpy / pytorch / jax (skipping what is missing).

``SEKRON_TEST_BACKENDS=numpy,pytorch`` narrows the list. Tests receive a ``Backend`` helper
that converts numpy data to that backend's arrays; sekron itself never needs the TensorLy
backend to be set, and the tests check that it stays untouched.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_MODULES = {"numpy": "numpy", "pytorch": "torch", "jax": "jax"}
_wanted = os.environ.get("SEKRON_TEST_BACKENDS", "numpy,pytorch,jax").split(",")
BACKENDS = [b for b in _wanted if importlib.util.find_spec(_MODULES[b]) is not None]


class Backend:
    """Converts numpy data to one backend's arrays."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def asarray(self, data: Any, dtype: str = "float64") -> Any:
        data = np.asarray(data, dtype=dtype)
        if self.name == "numpy":
            return data
        if self.name == "pytorch":
            import torch

            return torch.from_numpy(data.copy())
        import jax.numpy as jnp

        return jnp.asarray(data)

    @property
    def max_examples(self) -> int:
        """Hypothesis examples for property tests on this backend: JAX compiles every new shape,
        so it gets fewer (run such tests through ``settings(max_examples=...)`` inside)."""
        return 8 if self.name == "jax" else 40

    @property
    def supports_float64(self) -> bool:
        if self.name != "jax":
            return True
        import jax

        return bool(jax.config.read("jax_enable_x64"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture
def float_dtype(backend: Backend) -> str:
    """float64 where the backend supports it (jax without x64 does not), else float32."""
    return "float64" if backend.supports_float64 else "float32"


@pytest.fixture(scope="session")
def dask_client() -> Any:
    """A Dask client on a LocalCluster of two single-threaded worker processes, shared by every
    test that runs sekron on a cluster (starting one takes about a second). Its HTTP server
    takes any free port (":0"): another cluster on this machine may hold Dask's 8787."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2)  # shared objects are broadcast to the workers up by then
        yield client
