"""The core on every backend: same weights, same loss and gradients, right device."""
import itertools

import numpy as np
import pytest

import mlp_backend as mb
from mlp_backend import functional as F
from mlp_backend.backends import to_numpy
from mlp_backend.gradcheck import check_gradients

from conftest import MATRIX, TOL, needs_torch

HIDDEN = ["relu", "leaky_relu", "tanh", "sigmoid", "identity"]
HEADS = [("softmax", "cross_entropy"), ("sigmoid", "mse"), ("softmax", "mse"), ("identity", "mse")]
DEPTHS = [1, 2, 3, 4]  # number of weight layers


def combos():
    """Every hidden activation x (output, loss) x depth; depth 1 has no hidden layer."""
    out = []
    for (output, loss), depth in itertools.product(HEADS, DEPTHS):
        for act in (HIDDEN if depth > 1 else ["-"]):
            out.append(pytest.param(act, output, loss, depth, id=f"{act}-{output}-{loss}-d{depth}"))
    return out


def sizes_for(depth, n_in=7, n_out=4):
    widths = [6, 5, 5][: depth - 1]
    return [n_in, *widths, n_out]


def batch(n=9, n_in=7, n_out=4, seed=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, n_out, n)


def reference(act, output, loss, depth, seed=11):
    """The float64 NumPy reference: loss and gradients, host arrays."""
    acts = [] if act == "-" else act
    m = mb.MLP(sizes_for(depth), acts or "relu", output, loss, "lecun", "float64", "cpu", seed)
    x, y = batch()
    lval, grads, _ = m.loss_and_grads(x, y)
    return m, float(lval), grads


def torch_autograd(model, x, y):
    """The loss and gradients of ``model``'s network at its weights, written out again in
    PyTorch float64 from the definitions in :mod:`mlp_backend.functional` and
    differentiated by autograd: an oracle that shares no code with the library."""
    import torch
    hidden = {"relu": torch.relu, "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, F.LEAKY_SLOPE),
              "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda z: z}
    outputs = {"softmax": lambda z: torch.softmax(z, dim=1), "sigmoid": torch.sigmoid, "identity": lambda z: z}
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()}
    a, last = torch.tensor(x, dtype=torch.float64), model.n_layers
    for i in range(1, last + 1):
        z = a @ params[f"w{i}"] + params[f"b{i}"]
        a = hidden[model.activations[i - 1]](z) if i < last else outputs[model.output](z)
    target = torch.nn.functional.one_hot(torch.tensor(y), model.sizes[-1]).to(torch.float64)
    rows = x.shape[0]
    if model.loss_name == "cross_entropy":  # -(1/n) sum y . log softmax(z)
        value = -(target * torch.log_softmax(z, dim=1)).sum() / rows
    else:  # the paper's eq. (15): (1/2n) sum of squared errors
        value = ((a - target) ** 2).sum() / (2 * rows)
    value.backward()
    return value.item(), {k: v.grad.numpy() for k, v in params.items()}


@needs_torch
@pytest.mark.parametrize("act,output,loss,depth", combos())
def test_numpy_float64_reference_matches_torch_autograd(act, output, loss, depth):
    """The reference the other backends are held to (NumPy, float64) against an
    independent implementation: loss and every gradient entry to float64 rounding."""
    model, ref_loss, ref_grads = reference(act, output, loss, depth)
    x, y = batch()
    lval, grads, cache = model.loss_and_grads(x, y)
    b = model.backend
    assert b.owns(lval) and lval.dtype == model.dtype == np.float64
    assert all(b.owns(g) and g.dtype == np.float64 for g in grads.values()) and b.owns(cache.output)
    want_loss, want_grads = torch_autograd(model, x, y)
    np.testing.assert_allclose(ref_loss, want_loss, rtol=TOL["float64"])
    assert set(ref_grads) == set(want_grads)
    for k, want in want_grads.items():
        np.testing.assert_allclose(ref_grads[k], want, rtol=TOL["float64"],
                                   atol=TOL["float64"] * np.abs(want).max() + 1e-15, err_msg=f"gradient {k}")


# Every backend but the reference itself (NumPy float64), which the test above and the
# finite-difference test below check against oracles of their own.
@pytest.mark.parametrize("device,dtype", [p for p in MATRIX if p.id != "numpy-f64"])
@pytest.mark.parametrize("act,output,loss,depth", combos())
def test_backend_matches_numpy_float64(device, dtype, act, output, loss, depth):
    ref_model, ref_loss, ref_grads = reference(act, output, loss, depth)
    model = mb.MLP(sizes_for(depth), act if act != "-" else "relu", output, loss, "lecun", dtype, device, 11)
    b = model.backend
    # Same seed => the same initial weights (bit-identical after the cast to dtype).
    for k, v in ref_model.params.items():
        np.testing.assert_array_equal(to_numpy(model.params[k]), v.astype(dtype))
    x, y = batch()
    xd, yd = b.asarray(x, dtype), b.asarray(y)
    lval, grads, cache = model.loss_and_grads(xd, yd)
    tol = TOL[dtype]
    assert b.owns(lval) and lval.dtype == model.dtype
    np.testing.assert_allclose(b.to_float(lval), ref_loss, rtol=tol * 10)
    assert set(grads) == set(ref_grads)
    for k, g in grads.items():
        assert b.owns(g), f"{k} is not on {b.label}"
        assert g.dtype == model.dtype, f"{k} has dtype {g.dtype}, not {dtype}"
        ref = ref_grads[k]
        np.testing.assert_allclose(to_numpy(g), ref, rtol=tol * 10, atol=tol * np.abs(ref).max() + 1e-12,
                                   err_msg=f"gradient {k}")
    assert b.owns(cache.output) and b.owns(model.predict(xd))


@pytest.mark.parametrize("act,output,loss,depth", combos())
def test_finite_differences_float64(act, output, loss, depth):
    model = mb.MLP(sizes_for(depth), act if act != "-" else "relu", output, loss, "lecun", "float64", "cpu", 5)
    x, y = batch(seed=8)
    assert check_gradients(model, x, y, eps=1e-6, max_entries=12) < 1e-6


@pytest.mark.parametrize("device,dtype", [p for p in MATRIX if "float64" in p.values[1]])
def test_finite_differences_on_other_backends(device, dtype):
    model = mb.MLP([7, 6, 5, 4], ["relu", "tanh"], "softmax", "cross_entropy", "he", dtype, device, 2)
    x, y = batch()
    b = model.backend
    assert check_gradients(model, b.asarray(x, dtype), b.asarray(y), max_entries=8) < 1e-6


def test_normalizer_scales_every_gradient_exactly():
    model = mb.MLP([7, 6, 4], "relu", "sigmoid", "mse", "uniform", "float64", "cpu", 1)
    x, y = batch()
    g_mean = model.backward(model.forward(x), y)
    g_784 = model.backward(model.forward(x), y, normalizer=784)
    for k in g_mean:
        np.testing.assert_allclose(g_784[k], g_mean[k] * x.shape[0] / 784, rtol=1e-12)
    assert check_gradients(model, x, y, normalizer=784, max_entries=10) < 1e-6


def test_fused_softmax_cross_entropy_equals_chained_form():
    z = np.random.default_rng(0).normal(size=(5, 4)) * 3
    y = F.one_hot(np.array([0, 1, 2, 3, 1]), 4, np.float64, np, "cpu")
    a = F.softmax(z, np)
    chained = F.softmax_backward(F.cross_entropy_grad(z, a, y, np), a, np)
    np.testing.assert_allclose(F.output_delta("softmax", "cross_entropy", z, a, y, np), chained, atol=1e-12)


def test_sigmoid_and_softmax_are_overflow_safe():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise"):
        s = F.sigmoid(z, np)
        p = F.softmax(z, np)
        ls = F.log_softmax(z, np)
    np.testing.assert_allclose(s, [[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(p, [[0.0, 0.0, 1.0]])
    assert np.isfinite(ls).all()
    assert np.isfinite(F.cross_entropy(z, p, np.array([[1.0, 0, 0]]), np))


def test_derivatives_match_numerical_derivatives():
    z = np.linspace(-3, 3, 61) + 0.013  # avoid the kink of relu at 0
    for name, d in F.DERIVATIVES.items():
        f = F.ACTIVATIONS[name]
        num = (f(z + 1e-6, np) - f(z - 1e-6, np)) / 2e-6
        np.testing.assert_allclose(d(f(z, np), np), num, atol=1e-6, err_msg=name)


def test_initialisers_have_the_documented_scale():
    big = (4000, 300)
    for name, std in [("he", np.sqrt(2 / 4000)), ("lecun", np.sqrt(1 / 4000)), ("paper-he", 1.0),
                      ("paper-lecun", 1.0)]:
        p = mb.initialize([*big, 2], name, seed=0)
        assert abs(p["w1"].std() / std - 1) < 0.01, name
        assert not p["b1"].any(), name
    p = mb.initialize([*big, 2], "uniform", seed=0)
    assert -0.5 <= p["w1"].min() and p["w1"].max() < 0.5 and p["b1"].std() > 0.25
    p = mb.initialize([*big, 2], "xavier", seed=0)
    assert np.abs(p["w1"]).max() <= np.sqrt(6 / 4300)
    assert mb.initialize([3, 2], "paper-random", 0)["w1"].shape == (3, 2)


def test_same_seed_same_weights_different_seed_different():
    a, b, c = (mb.initialize([5, 4, 3], "he", s) for s in (1, 1, 2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["w1"], c["w1"])


def test_parameters_keep_the_paper_names_and_shapes():
    m = mb.MLP([784, 100, 40, 10], ["relu", "tanh"], "sigmoid", "mse", "paper-he", device="cpu")
    shapes = {k: tuple(v.shape) for k, v in m.params.items()}
    assert shapes == {"w1": (784, 100), "b1": (100,), "w2": (100, 40), "b2": (40,), "w3": (40, 10), "b3": (10,)}
    assert m.params["w1"].dtype == np.float32


@pytest.mark.parametrize("device,dtype", MATRIX)
def test_model_moves_between_devices(device, dtype):
    """A model made on the CPU moves to ``device`` (every parameter there, in its dtype)
    and back to the CPU with the same values, bit for bit."""
    m = mb.MLP([5, 4, 3], "tanh", dtype=dtype, device="cpu", seed=4)
    before = m.host_params()
    m.to(device)
    assert m.backend.label == mb.get_backend(device).label
    assert all(m.backend.owns(v) and v.dtype == m.dtype for v in m.params.values())
    m.to("cpu")
    assert m.backend.label == mb.get_backend("cpu").label
    for k, v in m.host_params().items():
        assert v.dtype == np.dtype(dtype), k
        np.testing.assert_array_equal(v, before[k])


def test_float64_to_float32_cast():
    m = mb.MLP([5, 4, 3], dtype="float64", device="cpu").astype("float32")
    assert all(v.dtype == np.float32 for v in m.params.values())


def test_bad_model_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="unknown hidden activation 'swish'; choose from identity, relu"):
        mb.MLP([4, 3, 2], "swish")
    with pytest.raises(ValueError, match="softmax is only an output activation"):
        mb.MLP([4, 3, 2], "softmax")
    with pytest.raises(ValueError, match="needs output='softmax'.*--loss mse"):
        mb.MLP([4, 3, 2], output="sigmoid", loss="cross_entropy")
    with pytest.raises(ValueError, match="2 activations given for 1 hidden layers"):
        mb.MLP([4, 3, 2], ["relu", "tanh"])
    with pytest.raises(ValueError, match="unknown init 'kaiming'"):
        mb.MLP([4, 3, 2], init="kaiming")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        mb.MLP([4, 3, 2], loss="hinge")
    with pytest.raises(ValueError, match="parameters for layer 1 must be w1"):
        mb.MLP([4, 3, 2], params={"w1": np.zeros((3, 3)), "b1": np.zeros(3), "w2": np.zeros((3, 2)),
                                   "b2": np.zeros(2)})
