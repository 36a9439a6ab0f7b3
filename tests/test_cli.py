"""The `sekron compare` command line: inputs, one-line errors with exit code 2, JSON and plot."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sekron.cli import main


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _assert_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sekron: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)


def test_npy_json_and_plot(tmp_path, capsys, weight) -> None:
    path = tmp_path / "w.npy"
    np.save(path, weight)
    js, png = tmp_path / "rows.json", tmp_path / "plot.png"
    code, out, err = _run(
        [
            "compare",
            str(path),
            "--compression",
            "2",
            "4",
            "--json",
            str(js),
            "--plot",
            str(png),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "SeKron (searched)" in out and "Tucker-2" in out
    rows = json.loads(js.read_text())["rows"]
    assert {r["family"] for r in rows} == {"sekron", "gkpd", "tt", "tr", "cp", "tucker", "tucker2"}
    assert {r["compression"] for r in rows} == {2.0, 4.0}
    for r in rows:
        assert set(r) >= {
            "family",
            "compression",
            "n_params",
            "rel_error",
            "shapes",
            "ranks",
            "form",
        }
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_max_seconds_reports_an_uncertified_search(tmp_path, capsys) -> None:
    # a limit that runs out at once: only 2-factor configurations are evaluated, and the
    # command says so when the bound on the skipped ones does not certify the best
    W = np.random.default_rng(4).standard_normal((8, 8, 3, 3))
    path = tmp_path / "w.npy"
    np.save(path, W)
    js = tmp_path / "rows.json"
    argv = [
        "compare",
        str(path),
        "--compression",
        "2",
        "--max-seconds",
        "1e-9",
        "--json",
        str(js),
        "--no-progress",
    ]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    row = next(r for r in json.loads(js.read_text())["rows"] if r["family"] == "sekron")
    assert len(row["shapes"]) == 2
    from sekron import search

    res = search(W, compression=2, max_seconds=1e-9, progress=False)
    assert ("stopped early" in err) == (not res.certified)
    if not res.certified:
        assert f"{res.n_open:,} configurations left unevaluated" in err
    assert row["rel_error"] == pytest.approx(res.best.rel_error)


def test_npz_and_torch_state_dict_keys(tmp_path, capsys, weight) -> None:
    # several entries and no conv weight among them: choose with --key
    lin = tmp_path / "lin.npz"
    np.savez(lin, a=weight.reshape(8, 36), b=weight[:4].reshape(16, 9))
    code, _, err = _run(["compare", str(lin), "--compression", "4", "--no-progress"], capsys)
    _assert_usage_error(code, err, "2 entries", "no conv weight", "--key", "a", "b")
    npz = tmp_path / "w.npz"
    np.savez(npz, a=weight, b=weight[:4])
    code, out, err = _run(
        ["compare", str(npz), "--key", "b", "--compression", "4", "--no-progress"], capsys
    )
    assert code == 0, err
    assert "(4, 4, 3, 3)" in out
    code, _, err = _run(["compare", str(npz), "--key", "zz", "--compression", "4"], capsys)
    _assert_usage_error(code, err, "no entry named 'zz'")

    torch = pytest.importorskip("torch")
    pt = tmp_path / "sd.pt"
    torch.save({"layer1.0.conv1.weight": torch.from_numpy(weight), "step": 3}, pt)
    code, out, err = _run(
        [
            "compare",
            str(pt),
            "--key",
            "layer1.0.conv1.weight",
            "--compression",
            "4",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = _run(["compare", str(pt), "--key", "step"], capsys)
    _assert_usage_error(code, err, "'step'", "not a tensor")


def test_pickles_are_refused(tmp_path, capsys) -> None:
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = _run(["compare", str(obj)], capsys)
    _assert_usage_error(code, err, "pickle")

    torch = pytest.importorskip("torch")
    pt = tmp_path / "evil.pt"
    with open(pt, "wb") as f:
        pickle.dump({"w": _Custom()}, f)
    code, _, err = _run(["compare", str(pt)], capsys)
    _assert_usage_error(code, err, "weights_only=True")
    del torch


class _Custom:
    pass


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["compare", "{tmp}/missing.npy"], ["no such file"]),
        (["compare", "{tmp}/w.txt"], ["unsupported file type '.txt'"]),
        (["compare", "{tmp}/w.npy", "--compression", "1"], ["compression must be a number > 1"]),
        (["compare", "{tmp}/w.npy", "--compression", "x"], ["not a number"]),
        (["compare", "{tmp}/v.npy"], ["shape (12,)", ">= 2 modes"]),
        (["compare", "{tmp}/w.npy", "--max-factors", "1"], ["--max-factors must be >= 2"]),
        (["compare", "{tmp}/w.npy", "--key", "k"], ["--key 'k' does not apply"]),
        (["compare", "--key", "k"], ["--key needs a PATH"]),
        (["compare", "{tmp}/w.npy", "--json", "{tmp}/nodir/x.json"], ["directory does not exist"]),
        (["compare", "{tmp}/w.npy", "--threads", "0"], ["--threads must be >= 1"]),
        (["compare", "{tmp}/w.npy", "--max-seconds", "0"], ["--max-seconds must be a number > 0"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, weight, argv, needles) -> None:
    np.save(tmp_path / "w.npy", weight)
    np.save(tmp_path / "v.npy", np.arange(12.0))
    (tmp_path / "w.txt").write_text("1 2 3")
    code, _, err = _run([a.format(tmp=tmp_path) for a in argv], capsys)
    _assert_usage_error(code, err, *needles)


def test_ctrl_c_exits_130(tmp_path, capsys, weight, monkeypatch) -> None:
    np.save(tmp_path / "w.npy", weight)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["sekron.compare"], "compare", interrupted)
    code, _, err = _run(["compare", str(tmp_path / "w.npy")], capsys)
    assert code == 130 and "interrupted" in err


def test_embedded_example_runs(capsys) -> None:
    code, out, err = _run(
        ["compare", "--compression", "16", "--max-factors", "2", "--no-progress"], capsys
    )
    assert code == 0, err
    assert "features.8.weight" in out and "(128, 64, 3, 3)" in out


def test_console_script_subprocess(tmp_path) -> None:
    script = shutil.which("sekron")
    if script is None:  # not installed as a script: run the same entry point
        cmd = [sys.executable, "-c", "import sys; from sekron.cli import main; sys.exit(main())"]
    else:
        cmd = [script]
    proc = subprocess.run(
        [*cmd, "compare", str(tmp_path / "missing.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sekron: error: {tmp_path / 'missing.npz'}: no such file"
    assert "Traceback" not in proc.stderr


# --- whole checkpoints, provenance, Ctrl-C and the options of issue #13 -----------------------

_FAST = ["--compression", "2", "4", "--max-factors", "2"]


def _checkpoint(tmp_path, weight):
    path = tmp_path / "model.npz"
    long = "encoder.stages.3.blocks.11.attention_pooling.depthwise_conv.weight"
    np.savez(path, **{"conv1.weight": weight, long: weight[:4], "fc.weight": weight[:, :, 0, 0]})
    return path, long


def test_checkpoint_compares_every_conv_weight(tmp_path, capsys, weight) -> None:
    path, long = _checkpoint(tmp_path, weight)
    js, png = tmp_path / "rows.json", tmp_path / "p.png"
    argv = ["compare", str(path), *_FAST, "--json", str(js), "--plot", str(png), "--no-progress"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    lines = [line for line in out.splitlines() if not line.startswith("wrote ")]
    assert max(len(line) for line in lines) <= 100
    assert lines[0].startswith("best family per layer") and lines[0].endswith("(2)")
    assert any(line.startswith("conv1.weight") and "8x4x3x3" in line for line in lines)
    assert any(line.startswith("…") and long.endswith(line.split()[0][1:]) for line in lines)
    assert "fc.weight" not in out  # 2-D: not a conv weight
    doc = json.loads(js.read_text())
    assert [layer["key"] for layer in doc["layers"]] == ["conv1.weight", long]
    assert {(r["layer"], r["compression"]) for r in doc["rows"]} == {
        (k, c) for k in ("conv1.weight", long) for c in (2.0, 4.0)
    }
    assert len(doc["rows"]) == 2 * 2 * 7
    # the summary shows each layer's best row at each ratio
    short = {"sekron": "SeKron", "gkpd": "GKPD", "tt": "TT", "tr": "TR", "cp": "CP"}
    short.update(tucker="Tucker", tucker2="Tucker-2")
    for layer, start in (("conv1.weight", "conv1.weight"), (long, "…")):
        line = next(x for x in lines if x.startswith(start))
        cells = []
        for c in (2.0, 4.0):
            rows = [r for r in doc["rows"] if r["layer"] == layer and r["compression"] == c]
            best = min(
                (r for r in rows if r["rel_error"] is not None),
                key=lambda r: (r["rel_error"], r["n_params"]),
            )
            cells.append(f"{short[best['family']]} {best['rel_error']:.4f}")
        assert line.split(None, 2)[2].split("  ")[0] == cells[0], (line, cells)
        assert line.rstrip().endswith(cells[1])
    for name in ("conv1.weight", long):
        assert (tmp_path / f"p.{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert not png.exists()


def test_checkpoint_key_globs_and_single_match(tmp_path, capsys, weight) -> None:
    path, long = _checkpoint(tmp_path, weight)
    code, out, err = _run(
        ["compare", str(path), "--key", "encoder.*", *_FAST, "--no-progress"], capsys
    )
    assert code == 0, err
    # one match behaves as a single tensor: its name, its shape and the full table
    assert out.splitlines()[0] == f"{long}: shape (4, 4, 3, 3), float32"
    assert "relative error at equal parameter budgets" in out
    code, out, err = _run(
        ["compare", str(path), "--key", "conv1.*", "--key", "fc.weight", *_FAST, "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert "budgets (2)" in out and "fc.weight     8x4 " in out


def test_json_provenance(tmp_path, capsys, weight) -> None:
    import sekron

    path = tmp_path / "w.npy"
    np.save(path, weight)
    js = tmp_path / "rows.json"
    argv = ["compare", str(path), *_FAST, "--families", "sekron", "gkpd", "cp", "--json"]
    code, _, err = _run([*argv, str(js), "--no-progress", "--max-configs", "50"], capsys)
    assert code == 0, err
    doc = json.loads(js.read_text())
    assert doc["sekron_version"] == sekron.__version__
    import hashlib

    assert doc["input"] == {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "keys": None,
        "argv": ["sekron", *argv, str(js), "--no-progress", "--max-configs", "50"],
    }
    assert doc["partial"] is False
    assert doc["options"] == {
        "compression": [2.0, 4.0],
        "families": ["sekron", "gkpd", "cp"],
        "forms": ["nested", "chain"],
        "max_factors": 2,
        "max_configs": 50,
        "max_seconds": None,
        "threads": None,
        "max_macs": None,
        "mac_compression": None,
    }
    [layer] = doc["layers"]
    assert layer["key"] == "w" and layer["shape"] == [8, 4, 3, 3] and layer["dtype"] == "float32"
    assert set(layer["seconds"]) == {"sekron+gkpd", "cp", "total"}
    assert layer["effort"].startswith("SeKron: greedy search, then 30 ALS sweeps")
    assert all(s >= 0 for s in layer["seconds"].values())
    assert [s["compression"] for s in layer["searches"]] == [2.0, 4.0]
    assert all(s["n_configs"] <= 50 for s in layer["searches"])
    assert {r["family"] for r in doc["rows"]} == {"sekron", "gkpd", "cp"}
    for r in doc["rows"]:
        cert = {"certified", "bound", "n_open"}
        assert cert <= set(r) if r["family"] == "sekron" else not cert & set(r)
        if r["family"] == "sekron":
            assert r["certified"] is True and r["n_open"] == 0


def _wrap_compare(monkeypatch, hook=None) -> list:
    """Patch sekron.compare.compare: record each call's keywords, and let ``hook(W, kw)``
    raise or return changed keywords before the real compare runs."""
    module = sys.modules["sekron.compare"]
    real, seen = module.compare, []

    def compare(W, **kw):
        seen.append(kw)
        return real(W, **((hook(W, kw) if hook else None) or kw))

    monkeypatch.setattr(module, "compare", compare)
    return seen


def _compare_interrupted_at(monkeypatch, family: str) -> list:
    """Each compare call's keywords; KeyboardInterrupt when ``family`` is to be fitted."""

    def hook(W, kw):
        if family in kw["families"]:
            raise KeyboardInterrupt

    return _wrap_compare(monkeypatch, hook)


def _compare_interrupted_at_step(monkeypatch, step: int, when=lambda W: True) -> list:
    """Each compare call's keywords; Ctrl-C (KeyboardInterrupt) lands in compare when its
    progress reaches ``step`` (the family fits come first: one step per family and ratio,
    then one per search)."""

    def hook(W, kw):
        if not when(W):
            return None
        inner = kw["progress"]

        def progress(done, total, *rest):
            if done == step:
                raise KeyboardInterrupt
            return inner(done, total, *rest)

        return {**kw, "progress": progress}

    return _wrap_compare(monkeypatch, hook)


def _families(seen: list) -> list:
    return [tuple(kw["families"]) for kw in seen]


def test_ctrl_c_stops_at_once_and_writes_what_finished(tmp_path, capsys, weight, monkeypatch):
    path = tmp_path / "w.npy"
    np.save(path, weight)
    js, png = tmp_path / "rows.json", tmp_path / "p.png"
    calls = _compare_interrupted_at_step(monkeypatch, 2)  # after TT at both ratios
    argv = ["compare", str(path), *_FAST, "--json", str(js), "--plot", str(png), "--no-progress"]
    code, out, err = _run(argv, capsys)
    assert code == 130
    assert len(calls) == 1  # one compare for every family
    assert "TT" in out and "interrupted" in out
    assert err.strip().splitlines()[-1] == "sekron: interrupted; the results above are partial"
    doc = json.loads(js.read_text())
    assert doc["partial"] is True
    finished = {r["family"] for r in doc["rows"] if r["rel_error"] is not None}
    assert finished == {"tt"}  # nothing after the interrupt: the other rows say why
    assert all(r["reason"] == "interrupted" for r in doc["rows"] if r["family"] != "tt")
    assert "wrote" in out and "(partial)" in out and png.exists()


def test_ctrl_c_in_a_checkpoint_keeps_finished_layers(tmp_path, capsys, weight, monkeypatch):
    path, long = _checkpoint(tmp_path, weight)
    _compare_interrupted_at_step(monkeypatch, 3, when=lambda W: W.shape[0] == 4)
    js = tmp_path / "rows.json"
    code, out, _ = _run(["compare", str(path), *_FAST, "--json", str(js), "--no-progress"], capsys)
    assert code == 130
    doc = json.loads(js.read_text())
    assert [x["key"] for x in doc["layers"]] == ["conv1.weight", long]
    rows = {key: [r for r in doc["rows"] if r["layer"] == key] for key in ("conv1.weight", long)}
    assert all(r["reason"] != "interrupted" for r in rows["conv1.weight"])
    done = [r for r in rows[long] if r["reason"] != "interrupted"]
    assert len(done) == 3  # TT at 2x and 4x, TR at 2x finished before Ctrl-C


def test_sigint_during_the_search(tmp_path, capsys, weight, monkeypatch) -> None:
    # a real SIGINT, delivered while the last search runs: the search returns what it found,
    # compare stops there, and the command exits 130 with what finished
    import importlib
    import signal

    run = importlib.import_module("sekron.compare._run")
    path = tmp_path / "w.npy"
    np.save(path, weight)
    real = run.search
    handler = signal.getsignal(signal.SIGINT)  # (SIG_IGN in a job started in the background)
    calls = []

    def search(W, **kw):
        calls.append(kw["max_params"])

        def progress(done, total):
            if len(calls) == 2 and done == total // 2:  # half-way through the 4x search
                signal.raise_signal(signal.SIGINT)

        return real(W, **{**kw, "progress": progress})

    monkeypatch.setattr(run, "search", search)
    js = tmp_path / "rows.json"
    argv = ["compare", str(path), *_FAST, "--json", str(js), "--max-seconds", "600"]
    code, out, err = _run(argv, capsys)  # with --max-seconds: one search per ratio
    assert code == 130, err
    assert len(calls) == 2
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    doc = json.loads(js.read_text())
    assert doc["partial"] is True
    sekron_rows = {r["compression"]: r for r in doc["rows"] if r["family"] == "sekron"}
    assert sekron_rows[2.0]["rel_error"] is not None  # the 2x search had finished
    assert sekron_rows[4.0]["reason"] == "interrupted"


def test_pending_ctrl_c_stops_compare_at_its_next_step(capsys) -> None:
    from sekron.cli._main import _Progress, _Stop

    stop = _Stop()
    progress = _Progress(False, stop)
    progress(1, 10)  # nothing pending: carries on, silently
    stop.requested = True
    with pytest.raises(KeyboardInterrupt):
        progress(2, 10)
    assert capsys.readouterr().err == ""


def test_families_forms_and_max_configs_reach_compare(tmp_path, capsys, weight, monkeypatch):
    path = tmp_path / "w.npy"
    np.save(path, weight)
    seen = _wrap_compare(monkeypatch)
    argv = ["compare", str(path), "--families", "cp", "gkpd", "--forms", "chain"]
    code, out, err = _run([*argv, "--max-configs", "7", *_FAST, "--no-progress"], capsys)
    assert code == 0, err
    assert [set(f) for f in _families(seen)] == [{"gkpd", "cp"}]
    assert all(kw["forms"] == ("chain",) and kw["max_configs"] == 7 for kw in seen)
    assert "GKPD" in out and "CP" in out and "TT" not in out and "SeKron" not in out


def test_path_after_compression_ratios(tmp_path, capsys, weight) -> None:
    path = tmp_path / "w.npy"
    np.save(path, weight)
    code, out, err = _run(
        ["compare", "--compression", "4", "8", str(path), "--families", "tt", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert out.splitlines()[0] == "w: shape (8, 4, 3, 3), float32"
    assert "4x" in out and "8x" in out


def test_version_and_no_arguments(capsys) -> None:
    import sekron

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"sekron {sekron.__version__}\n"
    code, out, err = _run([], capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[0].startswith("usage: sekron")
    assert "sekron --help" in err.splitlines()[1]


def test_progress_on_a_non_terminal_has_no_carriage_returns(tmp_path, weight) -> None:
    path = tmp_path / "w.npy"
    np.save(path, weight)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from sekron.cli import main; sys.exit(main())"]
        + ["compare", str(path), *_FAST],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    assert "sekron: w: fitting sekron, gkpd, tt, tr, cp, tucker, tucker2" in proc.stderr
    assert re.search(r"^sekron: w: \d+/\d+$", proc.stderr, re.M)  # the search's steps


def test_max_seconds_bounds_each_tensors_comparison(tmp_path, capsys, weight, monkeypatch):
    # one compare per tensor, given the whole limit (compare shares it out: its own tests)
    path = tmp_path / "w.npy"
    np.save(path, weight)
    seen = _wrap_compare(monkeypatch, lambda W, kw: {**kw, "max_seconds": None})
    argv = ["compare", str(path), "--families", "sekron", "tt", "cp", "--max-seconds", "100"]
    code, _, err = _run([*argv, *_FAST, "--no-progress"], capsys)
    assert code == 0, err
    assert [kw["max_seconds"] for kw in seen] == [100]


def test_summary_fits_100_columns_with_many_ratios_and_long_names() -> None:
    from sekron import compare
    from sekron.cli._report import LayerResult, summary_table

    comps = (1.5, 2, 3, 4, 6, 8, 12, 16)
    layers = []
    for i, name in enumerate(["a", "backbone.stage4.block23.conv_pointwise_expand.weight" * 2]):
        W = np.random.default_rng(i).standard_normal((4, 4, 3, 3))
        table = compare(W, compression=comps, families=("tt", "cp"), progress=False)
        layers.append(LayerResult(name, W.shape, "float64", [(("tt", "cp"), table, 0.0)]))
    text = summary_table(layers, [float(c) for c in comps])
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    heads = [line for line in lines if line.startswith("layer")]
    assert len(heads) >= 2  # the ratios did not fit side by side: a second block
    assert sum(h.count("x ") + h.endswith("x") for h in heads) == len(comps)
    assert sum(line.startswith("a ") for line in lines) == len(heads)


def test_sigint_to_a_running_command(tmp_path) -> None:
    # the real thing: Ctrl-C (SIGINT) sent to a `sekron compare` process while it searches
    import signal

    js = tmp_path / "rows.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sekron.cli import main; sys.exit(main())"]
        + ["compare", "--json", str(js)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # plain progress lines: stderr is a pipe
            seen.append(line)
            if "fitting sekron, gkpd" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sekron: interrupted"), err
    if js.exists():  # the search had evaluated some configurations: written, marked partial
        assert json.loads(js.read_text())["partial"] is True
        assert "(partial)" in out and last.endswith("the results above are partial")
    else:
        assert last.endswith("before any fit finished; nothing written")


def test_ctrl_c_before_any_fit_finished_writes_nothing(tmp_path, capsys, weight, monkeypatch):
    path = tmp_path / "w.npy"
    np.save(path, weight)
    calls = _compare_interrupted_at(monkeypatch, "sekron")
    js = tmp_path / "rows.json"
    code, out, err = _run(["compare", str(path), *_FAST, "--json", str(js)], capsys)
    assert code == 130 and len(calls) == 1
    assert out == "w: shape (8, 4, 3, 3), float32\n"
    assert err.strip().splitlines()[-1] == (
        "sekron: interrupted before any fit finished; nothing written"
    )
    assert not js.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]
