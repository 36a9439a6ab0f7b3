"""The `sekron compare` command line: inputs, one-line errors with exit code 2, JSON and plot."""

from __future__ import annotations

import json
import pickle
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
