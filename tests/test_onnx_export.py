"""ONNX export: onnxruntime's outputs against ours on the MNIST test set, every activation,
the checker, names and docs, and the CLI's errors (bad checkpoint, existing file, no onnx)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import GPU_OK, GPU_WHY, blobs
from mlp_backend.apps import cli
from mlp_backend.functional import ACTIVATIONS, HIDDEN_ACTIVATIONS
from mlp_backend.model import MLP
from mlp_backend.training.trainer import prepare_inputs

HAVE_ONNX = importlib.util.find_spec("onnx") is not None
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx is not installed (pip install 'mlp-backend[onnx]')")
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime is not installed (pip install onnxruntime)")
TOL = 1e-5  # |onnxruntime - ours| on probabilities


@pytest.fixture(scope="module")
def mnist():
    """The real MNIST test set (cached; downloaded only where network tests may run)."""
    from mlp_backend.data import DataError, load_dataset
    try:
        return load_dataset("mnist", log=None, download=os.environ.get("MLP_BACKEND_TEST_NETWORK") == "1")
    except DataError as exc:
        pytest.skip(f"real MNIST is not cached and MLP_BACKEND_TEST_NETWORK is not 1: {exc}")


def run_onnx(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    return sess.run([out.name], {inp.name: x})[0]


def ours(model, x):
    return model.backend.to_numpy(model.predict_proba(prepare_inputs(model.backend.asarray(x), model)))


@pytest.fixture(scope="module", params=["float32", "float64"])
def trained(request, mnist, tmp_path_factory):
    """A model trained briefly on MNIST on the CPU through the CLI, exported through the CLI."""
    d = tmp_path_factory.mktemp(f"onnx-{request.param}")
    assert cli.main(["train", "--hidden", "64", "32", "--epochs", "1", "--device", "cpu", "--dtype", request.param,
                     "--out", str(d / "run"), "--quiet"]) == 0
    ckpt = d / "run" / "model.npz"
    assert cli.main(["export", str(ckpt), "--onnx", str(d / "model.onnx")]) == 0
    return request.param, ckpt, d / "model.onnx"


@needs_onnx
@needs_ort
def test_onnxruntime_matches_ours_on_mnist(trained, mnist, capsys):
    import onnx
    from mlp_backend.training.checkpoint import load_checkpoint
    dtype, ckpt, path = trained
    onnx.checker.check_model(str(path), full_check=True)
    model = load_checkpoint(ckpt, device="cpu").model
    mine = ours(model, mnist.x_test)  # uint8 pixels, scaled by the library
    theirs = run_onnx(path, mnist.x_test.astype(dtype))  # float pixels 0..255, scaled in the graph
    assert theirs.dtype == np.dtype(dtype) and theirs.shape == (10000, 10)
    diff = float(np.max(np.abs(theirs - mine)))
    with capsys.disabled():
        print(f"\nONNX {dtype}: max |onnxruntime - mlp_backend| = {diff:.3g} on the 10,000 MNIST test images")
    assert diff <= TOL
    acc = float(np.mean(theirs.argmax(1) == mnist.y_test))
    assert acc > 0.9 and np.mean(theirs.argmax(1) == mine.argmax(1)) > 0.999


@needs_onnx
def test_graph_names_types_and_docs(trained):
    import onnx
    dtype, _, path = trained
    m = onnx.load(str(path))
    elem = onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.DOUBLE
    (inp,), (out,) = m.graph.input, m.graph.output
    assert (inp.name, out.name) == ("pixels", "probabilities")
    for v, width in ((inp, 784), (out, 10)):
        t = v.type.tensor_type
        assert t.elem_type == elem
        assert t.shape.dim[0].dim_param == "N" and t.shape.dim[1].dim_value == width
        assert v.doc_string
    assert "0..255" in inp.doc_string and "probabilities" in out.doc_string
    assert m.doc_string and m.graph.doc_string and m.producer_name == "mlp-backend"
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert [n.op_type for n in m.graph.node] == ["Mul", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["classes"]) == list(range(10)) and props["dtype"] == dtype
    assert json.loads(props["sizes"]) == [784, 64, 32, 10]


@needs_onnx
@needs_ort
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output", list(ACTIVATIONS))
def test_every_activation_and_output(tmp_path, mnist, dtype, output):
    """One network with every hidden activation the library has, each output activation."""
    from mlp_backend.interop.onnx_export import export_onnx
    acts = list(HIDDEN_ACTIVATIONS)
    assert set(acts) == {"relu", "leaky_relu", "tanh", "sigmoid", "identity"}
    model = MLP([784, *[24] * len(acts), 10], acts, output=output,
                loss="cross_entropy" if output == "softmax" else "mse", dtype=dtype, device="cpu", seed=3)
    path = export_onnx(model, tmp_path / "all.onnx")
    x = mnist.x_test
    mine, theirs = ours(model, x), run_onnx(path, x.astype(dtype))
    assert np.max(np.abs(theirs - mine)) <= TOL * max(1.0, float(np.max(np.abs(mine))))
    import onnx
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ("LeakyRelu" in ops) == (dtype == "float32") and ("Max" in ops) == (dtype == "float64")


@needs_onnx
def test_an_activation_without_onnx_form_is_named(tmp_path):
    from mlp_backend.interop.onnx_export import export_onnx
    model = MLP([4, 3, 2], "relu", device="cpu")
    model.activations = ("swish",)  # no such activation in the library: stands for a future one
    with pytest.raises(ValueError, match=r"cannot export activation 'swish' \(layer 1\) to ONNX"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@needs_onnx
@pytest.mark.parametrize("kind", ["garbage", "no-metadata", "missing"])
def test_bad_checkpoint_gets_the_evaluate_error(tmp_path, capsys, kind):
    bad = tmp_path / "bad.npz"
    if kind == "garbage":
        bad.write_bytes(b"not a checkpoint")
    elif kind == "no-metadata":
        np.savez(bad, w1=np.zeros((2, 2)))
    out = tmp_path / "out.onnx"
    assert cli.main(["evaluate", str(bad)]) == 1
    evaluate_err = capsys.readouterr().err
    assert cli.main(["export", str(bad), "--onnx", str(out)]) == 1
    export_err = capsys.readouterr().err
    assert export_err == evaluate_err and export_err.startswith(f"error: {bad}: ") and "\n" not in export_err[:-1]
    assert not out.exists()


@needs_onnx
def test_no_silent_overwrite_and_atomic(tmp_path, capsys):
    import onnx
    model = MLP([784, 8, 10], "relu", device="cpu")
    from mlp_backend.training.checkpoint import save_checkpoint
    ckpt = save_checkpoint(tmp_path / "m.npz", model)
    out = tmp_path / "out.onnx"
    out.write_bytes(b"keep me")
    assert cli.main(["export", str(ckpt), "--onnx", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert cli.main(["export", str(ckpt), "--onnx", str(out), "--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().out
    onnx.checker.check_model(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npz", "out.onnx"]  # no temp file left
    from mlp_backend.interop.onnx_export import export_onnx
    with pytest.raises(FileExistsError):
        export_onnx(model, out)


@needs_onnx
@needs_ort
def test_estimator_export_classes_pixels_and_features(tmp_path):
    """A fitted MLPClassifier exports with its labels; uint8-trained as pixels, float-trained
    with features=True (no scaling in the graph)."""
    pytest.importorskip("sklearn", minversion="1.6", reason="MLPClassifier needs scikit-learn >= 1.6")
    import onnx
    from mlp_backend.interop.estimator import MLPClassifier
    from mlp_backend.interop.onnx_export import export_onnx
    x, y = blobs(300, n_features=8, n_classes=3)
    names = np.array(["cat", "dog", "emu"])
    clf = MLPClassifier(hidden=(16,), epochs=5, batch_size=32, lr=0.01, device="cpu").fit(x, names[y])
    path = export_onnx(clf, tmp_path / "pixels.onnx")
    m = onnx.load(str(path))
    assert json.loads({p.key: p.value for p in m.metadata_props}["classes"]) == ["cat", "dog", "emu"]
    np.testing.assert_allclose(run_onnx(path, x.astype(np.float32)), clf.predict_proba(x), atol=TOL)
    xf = (x.astype(np.float64) - 128) / 25
    clf_f = MLPClassifier(hidden=(16,), epochs=5, batch_size=32, lr=0.01, device="cpu", dtype="float64").fit(xf, y)
    path = export_onnx(clf_f, tmp_path / "features.onnx", features=True)
    assert onnx.load(str(path)).graph.input[0].name == "features"
    np.testing.assert_allclose(run_onnx(path, xf), clf_f.predict_proba(xf), atol=TOL)


def test_missing_onnx_says_what_to_install(tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.modules["onnx"] = None  # makes `import onnx` raise ImportError
        from mlp_backend.apps import cli
        sys.exit(cli.main(["export", "model.npz", "--onnx", "out.onnx"]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "error: ONNX export needs the onnx package: pip install 'mlp-backend[onnx]'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out.onnx").exists()


@needs_onnx
@needs_ort
@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=f"no usable CUDA GPU here: {GPU_WHY}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_of_a_cuda_model(tmp_path, mnist, dtype):
    """A model on the GPU exports from its host copy; onnxruntime (CPU) matches it."""
    from mlp_backend.interop.onnx_export import export_onnx
    model = MLP([784, 64, 32, 10], ["relu", "leaky_relu"], dtype=dtype, device="cuda", seed=1)
    path = export_onnx(model, tmp_path / "cuda.onnx")
    x = mnist.x_test
    np.testing.assert_allclose(run_onnx(path, x.astype(dtype)), ours(model, x), atol=TOL, rtol=0)
