"""Bad input: every case gives ValueError/TypeError naming the argument, expectation and value."""

from __future__ import annotations

import numpy as np
import pytest

import sekron

W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
SHAPES = [(2, 3, 3, 1), (4, 2, 1, 3)]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"shapes": [(2, 3, 3, 1), (4, 2, 1, 1)]},
            ValueError,
            r"mode 3: prod\(s\[3\] for s in shapes\) == 1 but tensor.shape\[3\] == 3\.",
        ),
        (
            {"shapes": [(2, 3, 3), (4, 2, 1, 3)]},
            ValueError,
            r"shapes\[0\] has 3 modes but the tensor has 4; give one size per tensor mode\.",
        ),
        (
            {"shapes": [(8, 6, 3, 3)]},
            ValueError,
            r"shapes must hold at least 2 factor shapes \(S >= 2\); got 1\.",
        ),
        ({"shapes": "abc"}, TypeError, r"shapes must be a sequence of S >= 2 tuples of ints"),
        ({"shapes": [(2, 3, 3, 1), 7]}, TypeError, r"shapes\[1\] must be a tuple of ints; got int"),
        (
            {"shapes": [(2, 3.0, 3, 1), (4, 2, 1, 3)]},
            TypeError,
            r"shapes\[0\]\[1\] must be a positive int; got 3.0 of type float\.",
        ),
        (
            {"shapes": [(2, 0, 3, 1), (4, 2, 1, 3)]},
            ValueError,
            r"shapes\[0\]\[1\] must be a positive int; got 0\.",
        ),
        (
            {"shapes": [(2, -3, 3, 1), (4, 2, 1, 3)]},
            ValueError,
            r"shapes\[0\]\[1\] must be a positive int; got -3\.",
        ),
        ({"rank": 0}, ValueError, r"rank must be a positive int; got 0\."),
        ({"rank": -2}, ValueError, r"rank must be a positive int; got -2\."),
        ({"rank": 2.5}, TypeError, r"rank must be an int or a sequence of 1 ints"),
        ({"rank": True}, TypeError, r"rank must be an int or a sequence"),
        (
            {"rank": [2, 3]},
            ValueError,
            r"rank has 2 entries but there are 1 levels \(S - 1 for S = 2 factors\); got \(2, 3\)",
        ),
        ({"rank": [0]}, ValueError, r"rank\[0\] must be a positive int; got 0\."),
        ({"rank": ["2"]}, TypeError, r"rank\[0\] must be a positive int; got '2' of type str\."),
        ({"tol": 0.0}, ValueError, r"tol must be in the open interval \(0, 1\); got 0\.0\."),
        ({"tol": 1.0}, ValueError, r"tol must be in the open interval \(0, 1\); got 1\.0\."),
        ({"tol": -0.1}, ValueError, r"tol must be in the open interval \(0, 1\)"),
        ({"tol": "0.1"}, TypeError, r"tol must be a float in \(0, 1\); got str\."),
        (
            {"max_params": 10},
            ValueError,
            r"max_params=10 is too small for any structure with these shapes: ranks of 1 already "
            r"need 42 parameters",
        ),
        ({"max_params": 0}, ValueError, r"max_params must be a positive int; got 0\."),
        ({"max_params": 1e5}, TypeError, r"max_params must be a positive int; got 100000.0"),
        ({"tol": 0.1, "max_params": 1000}, ValueError, r"give at most one of tol and max_params"),
        ({"form": "tree"}, ValueError, r"form must be 'nested' or 'chain'; got 'tree'\."),
        (
            {"svd": "fast"},
            ValueError,
            r"svd must be one of \('auto', 'exact', 'gram', "
            r"'randomized'\); got 'fast'\.",
        ),
        ({"svd": "randomized"}, ValueError, r"svd='randomized' needs rank"),
        ({"refine": -1}, ValueError, r"refine must be a non-negative int \(ALS sweeps\); got -1"),
    ],
)
def test_bad_arguments(kwargs, error, message) -> None:
    args = {"shapes": SHAPES, **kwargs}
    shapes = args.pop("shapes")
    with pytest.raises(error, match=message):
        sekron.decompose(W, shapes, **args)


@pytest.mark.parametrize(
    ("tensor", "error", "message"),
    [
        (
            W.tolist(),
            TypeError,
            r"tensor must be a numpy.ndarray, torch.Tensor or jax.Array; got list\.",
        ),
        ("W", TypeError, r"tensor must be a numpy.ndarray, torch.Tensor or jax.Array; got str\."),
        (np.full((8, 6, 3, 3), np.nan), ValueError, r"tensor contains NaN or Inf"),
        (np.where(W > 2, np.inf, W), ValueError, r"tensor contains NaN or Inf"),
        (np.zeros((8, 0, 3, 3)), ValueError, r"tensor is empty \(shape \(8, 0, 3, 3\)\)"),
        (np.array(3.0), ValueError, r"tensor must have at least one mode; got a 0-d array"),
        (
            W.astype(np.complex128),
            TypeError,
            r"tensor has complex dtype complex128; sekron decomposes real tensors only",
        ),
        (
            W.astype(np.float16),
            TypeError,
            r"tensor has dtype float16; sekron supports float32 and float64",
        ),
        (W.astype(object), TypeError, r"tensor has dtype object"),
    ],
)
def test_bad_tensors(tensor, error, message) -> None:
    with pytest.raises(error, match=message):
        sekron.decompose(tensor, SHAPES)


def test_bad_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"tensor has complex dtype torch.complex64"):
        sekron.decompose(torch.zeros(8, 6, 3, 3, dtype=torch.complex64), SHAPES)
    with pytest.raises(TypeError, match=r"tensor has dtype torch.bfloat16"):
        sekron.decompose(torch.zeros(8, 6, 3, 3, dtype=torch.bfloat16), SHAPES)
    with pytest.raises(ValueError, match=r"tensor contains NaN or Inf"):
        sekron.decompose(torch.full((8, 6, 3, 3), float("nan")), SHAPES)


def test_sekron_tensor_construction_errors() -> None:
    with pytest.raises(ValueError, match=r"factors must hold at least 2 arrays \(S >= 2\); got 1"):
        sekron.SeKronTensor([np.ones((2, 3))])
    with pytest.raises(TypeError, match=r"factors\[1\] must be a numpy.ndarray.*got list"):
        sekron.SeKronTensor([np.ones((2, 3)), [[1.0]]])
    with pytest.raises(TypeError, match=r"factors must share one dtype"):
        sekron.SeKronTensor([np.ones((2, 3)), np.ones((2, 3), dtype=np.float32)])
    with pytest.raises(
        ValueError,
        match=r"factors\[1\] has leading rank dims \(3,\) but the ranks "
        r"are \(2,\)",
    ):
        sekron.SeKronTensor([np.ones((2, 3)), np.ones((3, 3))])
    with pytest.raises(ValueError, match=r"factors\[1\] has 3 dims but a nested factor 1 of 2"):
        sekron.SeKronTensor([np.ones((2, 3)), np.ones((2, 3, 3))])
    with pytest.raises(ValueError, match=r"a chain's boundary ranks must be 1"):
        sekron.SeKronTensor([np.ones((2, 2, 3)), np.ones((2, 1, 3))], form="chain")
    with pytest.raises(
        ValueError,
        match=r"chain ranks disagree: factors\[0\].shape\[1\] == 2 but "
        r"factors\[1\].shape\[0\] == 3",
    ):
        sekron.SeKronTensor([np.ones((1, 2, 3)), np.ones((3, 1, 3))], form="chain")
    with pytest.raises(ValueError, match=r"form must be 'nested' or 'chain'"):
        sekron.SeKronTensor([np.ones((1, 2, 3)), np.ones((2, 1, 3))], form="tt")


def test_random_sekron_errors() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of"):
        sekron.random_sekron([(2,), (2,)], 1, backend="tensorflow")
    with pytest.raises(ValueError, match=r"rank has 2 entries but there are 1 levels"):
        sekron.random_sekron([(2,), (2,)], [1, 2])
    with pytest.raises(TypeError, match=r"random_state must be None, an int"):
        sekron.random_sekron([(2,), (2,)], 1, random_state="seed")
