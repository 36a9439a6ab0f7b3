"""Worker faults on a real Dask LocalCluster: a worker process killed while it runs a task.

A worker plugin kills its own process (``os._exit``) when a task starts: once (the engine then
runs the task again elsewhere and the run completes), or every time that task starts (the
scheduler gives up after ``allowed-failures`` deaths: the run fails with an error naming the
task's label). Each test gets its own two-worker cluster, since killed workers are replaced.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sekron._executor import map_ordered

distributed = pytest.importorskip("distributed")


class KillOnStart(distributed.WorkerPlugin):
    """Kill this worker's process when a task starts executing: the first task of the run
    (whichever worker starts one first: the flag file is created atomically), and with
    ``every_try`` that same task each time it starts again."""

    def __init__(self, flag: str, every_try: bool) -> None:
        self.flag, self.every_try = flag, every_try

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing":
            return
        try:
            fd = os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if self.every_try and Path(self.flag).read_text() == str(key):
                os._exit(1)
            return
        os.write(fd, str(key).encode())
        os.close(fd)
        os._exit(1)


@pytest.fixture
def faulty(tmp_path, request) -> Any:
    """A client whose workers kill themselves as ``request.param`` says ("once" / "always")."""
    import dask

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2)  # both hold the shared objects: one may die
        plugin = KillOnStart(str(tmp_path / "killed"), every_try=request.param == "always")
        client.register_plugin(plugin, name="kill-on-start")
        yield client


def _scaled(item: int, *, weights: np.ndarray) -> float:
    return float(item * weights.sum())


LABELS = [f"layer{i}" for i in range(6)]


@pytest.mark.parametrize("faulty", ["once"], indirect=True)
def test_a_worker_killed_once_is_survived(faulty, tmp_path) -> None:
    out = map_ordered(
        _scaled,
        list(range(6)),
        executor=faulty.get_executor(),
        shared={"weights": np.ones(4)},
        labels=LABELS,
    )
    assert out == [4.0 * i for i in range(6)]
    assert (tmp_path / "killed").exists()  # a worker did die


@pytest.mark.parametrize("faulty", ["always"], indirect=True)
def test_a_task_that_kills_every_worker_fails_naming_its_label(faulty) -> None:
    with pytest.raises(RuntimeError, match=r"^the executor failed to run the task for 'layer\d'"):
        map_ordered(
            _scaled,
            list(range(6)),
            executor=faulty.get_executor(),
            shared={"weights": np.ones(4)},
            labels=LABELS,
        )


# -- compress: helper P15 wires ``executor=`` through map_ordered; these run once it has -------
# (torch is imported inside the tests: the workers import this module for the plugin above)
@pytest.fixture
def compress() -> Any:
    pytest.importorskip("torch")
    from sekron.torch import compress

    if "executor" not in inspect.signature(compress).parameters:
        pytest.skip("sekron.torch.compress has no executor= yet (helper P15's change)")
    return compress


def _digits() -> Any:
    from sekron.data.digits_cnn import load_pretrained

    return load_pretrained()


def _compressed(compress: Any, model: Any, **kw: Any) -> Any:
    return compress(model, structure="gkpd", compression=4, min_params=0, progress=False, **kw)


def _same_models(a: Any, b: Any) -> None:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]


def test_compress_on_a_dask_cluster_equals_the_local_compress(compress, dask_client) -> None:
    model = _digits()
    local, local_report = _compressed(compress, model)
    remote, remote_report = _compressed(compress, model, executor=dask_client.get_executor())
    _same_models(remote, local)
    assert list(remote_report) == list(local_report)  # every row, errors to the bit
    assert str(remote_report) == str(local_report)


@pytest.mark.parametrize("faulty", ["once"], indirect=True)
def test_compress_survives_a_killed_worker(compress, faulty, tmp_path) -> None:
    model = _digits()
    local, local_report = _compressed(compress, model)
    remote, remote_report = _compressed(compress, model, executor=faulty.get_executor())
    _same_models(remote, local)
    assert str(remote_report) == str(local_report)
    assert (tmp_path / "killed").exists()


@pytest.mark.parametrize("faulty", ["always"], indirect=True)
def test_compress_fails_naming_the_layer_and_leaves_the_model_whole(compress, faulty) -> None:
    model = _digits()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [type(m) for m in model.modules()]
    with pytest.raises(RuntimeError, match=r"the executor failed to run the task for 'features\."):
        _compressed(compress, model, executor=faulty.get_executor(), inplace=True)
    assert [type(m) for m in model.modules()] == kinds  # no layer replaced
    after = model.state_dict()
    import torch

    assert all(torch.equal(after[k], v) for k, v in before.items())
