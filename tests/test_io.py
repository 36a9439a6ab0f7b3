"""The command line's readers and output helpers: formats, dtypes, entry selection, atomic
writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from sekron.cli import CLIError, load_tensor, load_tensors
from sekron.cli._io import read_entries, select_entries
from sekron.cli._out import check_output, layer_plot_paths, write_atomically

W = np.random.default_rng(1).standard_normal((4, 3, 3, 3))


@pytest.mark.parametrize(
    ("stored", "dtype"),
    [
        (W.astype(np.float32), np.float32),
        (W, np.float64),
        (W.astype(">f4"), np.float32),  # big-endian: converted to native
        (np.asfortranarray(W), np.float64),
        (W.astype(np.float16), np.float32),
        (np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.float64),
    ],
)
def test_npy_dtypes(tmp_path, stored, dtype) -> None:
    np.save(tmp_path / "w.npy", stored)
    name, arr = load_tensor(tmp_path / "w.npy")
    assert name == "w" and arr.dtype == dtype and arr.dtype.isnative
    np.testing.assert_array_equal(arr, stored.astype(dtype))


def test_npz_selection(tmp_path) -> None:
    np.savez(
        tmp_path / "m.npz",
        **{"c1.weight": W, "c1.bias": W[:, 0, 0, 0], "fc.weight": W[:, :, 0, 0], "c2.weight": W[0]},
    )
    p = tmp_path / "m.npz"
    # no key: every conv weight (4-D and 3-D floating point), in file order
    assert [n for n, _ in load_tensors(p)] == ["c1.weight", "c2.weight"]
    # exact names, also of a 2-D tensor; globs keep tensors with >= 2 modes; no duplicates
    assert [n for n, _ in load_tensors(p, ["fc.weight"])] == ["fc.weight"]
    assert [n for n, _ in load_tensors(p, ["c*", "*.weight"])] == [
        "c1.weight",
        "c2.weight",
        "fc.weight",
    ]
    with pytest.raises(CLIError, match="holds 2 conv weights; choose one with --key"):
        load_tensor(p)
    name, arr = load_tensor(p, "c1.weight")
    np.testing.assert_array_equal(arr, W)


def test_exact_name_wins_over_glob(tmp_path) -> None:
    np.savez(tmp_path / "m.npz", **{"w[0]": W, "w0": W[0]})
    assert [n for n, _ in load_tensors(tmp_path / "m.npz", ["w[0]"])] == ["w[0]"]


def test_entries_are_described_before_reading(tmp_path) -> None:
    np.savez(tmp_path / "m.npz", a=W, b=np.ones((2, 2), dtype=np.int32))
    entries = read_entries(tmp_path / "m.npz")
    assert [(e.name, e.shape, e.dtype, e.kind) for e in entries] == [
        ("a", (4, 3, 3, 3), "float64", "f"),
        ("b", (2, 2), "int32", "i"),
    ]
    assert [e.name for e in select_entries(entries, None, tmp_path)] == ["a"]


def test_torch_state_dicts(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(W)
    torch.save(
        {"epoch": 3, "state_dict": {"conv.weight": t, "conv.bias": t[:, 0, 0, 0]}},
        tmp_path / "a.pt",
    )
    torch.save({"model": {"conv.weight": t}, "optim": {"lr": 0.1}}, tmp_path / "b.pth")
    torch.save(t.to(torch.bfloat16), tmp_path / "c.pt")
    assert [n for n, _ in load_tensors(tmp_path / "a.pt")] == ["conv.weight"]
    assert [n for n, _ in load_tensors(tmp_path / "b.pth")] == ["model.conv.weight"]
    name, arr = load_tensor(tmp_path / "c.pt")
    assert name == "c" and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, t.to(torch.bfloat16).float().numpy())
    with pytest.raises(CLIError, match=r"entry 'optim.lr' is a float, not a tensor"):
        load_tensors(tmp_path / "b.pth", ["optim.lr"])


@pytest.mark.parametrize("suffix", [".bin", ".ckpt", ".PT"])
def test_other_torch_suffixes(tmp_path, suffix) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / f"pytorch_model{suffix}"
    torch.save({"state_dict": {"conv.weight": torch.from_numpy(W)}, "epoch": 1}, path)
    [(name, arr)] = load_tensors(path)
    assert name == "conv.weight"
    np.testing.assert_array_equal(arr, W)


def test_safetensors(tmp_path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    st.save_file(
        {"conv.weight": W.astype(np.float16), "conv.bias": np.ones(4, np.float32)},
        tmp_path / "m.safetensors",
    )
    [(name, arr)] = load_tensors(tmp_path / "m.safetensors")
    assert name == "conv.weight" and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, W.astype(np.float16).astype(np.float32))


def test_safetensors_bfloat16_via_torch(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    sft = pytest.importorskip("safetensors.torch")
    t = torch.from_numpy(W).to(torch.bfloat16)
    sft.save_file({"w": t}, tmp_path / "m.safetensors")
    [(_, arr)] = load_tensors(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(arr, t.float().numpy())


def test_check_output_registers_and_refuses(tmp_path) -> None:
    src = tmp_path / "w.npy"
    src.write_bytes(b"x")
    taken = {src: "the input file"}
    out = check_output(str(tmp_path / "r.json"), "--json", ("json",), taken)
    assert out == tmp_path / "r.json" and not out.exists()  # checked, not created
    assert taken[out] == "the --json output"
    with pytest.raises(CLIError, match="is the --json output"):
        check_output(str(tmp_path / "." / "r.json"), "--plot", ("json",), taken)
    assert sorted(os.listdir(tmp_path)) == ["w.npy"]  # the write probe left nothing


def test_layer_plot_paths_are_safe_and_distinct(tmp_path) -> None:
    paths = layer_plot_paths(tmp_path / "p.png", ["a/b.weight", "a b.weight", "../x", "a_b.weight"])
    assert [p.name for p in paths] == [
        "p.a_b.weight.png",
        "p.a_b.weight-1.png",
        "p.x.png",
        "p.a_b.weight-3.png",
    ]
    assert all(p.parent == tmp_path for p in paths)


def test_write_atomically(tmp_path) -> None:
    out = tmp_path / "r.json"
    write_atomically(out, lambda p: p.write_text("one"))
    ref = tmp_path / "ref"
    ref.write_text("")  # a file made the ordinary way: mode 0666 & ~umask
    assert out.read_text() == "one"
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(ref.stat().st_mode)

    def fail(p: Path) -> None:
        p.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, fail)
    assert out.read_text() == "one"  # the old file survives an interrupted write
    assert sorted(os.listdir(tmp_path)) == ["r.json", "ref"]
