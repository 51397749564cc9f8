"""Every invalid input fails early with exit status 2 and a message naming the parameter."""

import numpy as np
import pytest

from subquad.cli import main
from subquad.errors import ConfigError
from subquad.model.data import check_data

BASE = ["train", "--method", "dense-gn", "--m", "64", "--n", "4", "--d", "8", "--L", "2",
        "--iters", "2"]


def _with(flag, value):
    args = list(BASE)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize(
    ("flag", "value", "param"),
    [
        ("--m", "0", "m"), ("--m", "-5", "m"), ("--n", "0", "n"), ("--d", "0", "d"),
        ("--L", "0", "L"), ("--iters", "0", "iters"), ("--iters", "-1", "iters"),
        ("--c", "0", "c"), ("--c", "0.6", "c"), ("--c", "-0.2", "c"), ("--n", "100", "n"),
        ("--method", "sgd", "method"), ("--dtype", "float16", "dtype"),
        ("--data", "mnist", "data"), ("--backend", "torch", "backend"),
        ("--threshold", "soft", "threshold"), ("--lr", "-1", "lr"), ("--damping", "-1", "damping"),
        ("--solver", "qr", "solver"),
    ],
)
def test_invalid_input_names_the_parameter(capsys, flag, value, param):
    assert main(_with(flag, value)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"subquad: error: {param}:"), err
    assert "Traceback" not in err


def test_memory_that_would_not_fit(capsys):
    args = _with("--m", str(1 << 20))
    args = args[:args.index("--L") + 1] + ["64"] + args[args.index("--L") + 2:]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "m:" in err and "needs about" in err and "available" in err


def test_cupy_backend_without_gpu_fails_clearly(capsys):
    pytest.importorskip("numpy")
    from subquad.model.backend import gpu_available

    if gpu_available()[0]:
        pytest.skip("a GPU is usable here")
    assert main(_with("--backend", "cupy")) == 2
    err = capsys.readouterr().err
    assert "backend" in err and "GPU" in err


def test_non_finite_data_is_rejected():
    X = np.ones((3, 4))
    X[1, 2] = np.nan
    with pytest.raises(ConfigError, match="^X: .*non-finite"):
        check_data(X, np.ones(3))
    with pytest.raises(ConfigError, match="^y: .*non-finite"):
        check_data(np.ones((3, 4)), np.array([1.0, np.inf, 0.0]))


def test_digits_needs_its_dimension(capsys):
    assert main(_with("--data", "digits")) == 2
    assert "d:" in capsys.readouterr().err
