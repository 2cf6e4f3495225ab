"""Export a trained model as a standard ONNX graph (``pip install 'mlp-backend[onnx]'``).

>>> from mlp_backend.interop.onnx_export import export_onnx
>>> export_onnx("runs/x/model.npz", "model.onnx")                       # doctest: +SKIP

or ``mlp-backend export runs/x/model.npz --onnx model.onnx``. The graph is built with the
``onnx`` package (``onnx.helper``, ``onnx.numpy_helper``), checked with
``onnx.checker.check_model(full_check=True)`` and written atomically; an existing file is
replaced only with ``overwrite=True`` (``--overwrite``).

The graph (opset 13, so any onnxruntime since 1.7 runs it, float32 and float64 alike):

==================  ===========================================================================
input ``pixels``    (N, 784) float pixels 0..255 (MNIST: white digit on black, 28x28 row-major),
                    N dynamic; tensor(float) for float32 models, tensor(double) for float64
``Mul``             x 1/255, in the model's dtype (exactly what training did to uint8 pixels)
per layer *i*       ``Gemm`` (``layer{i}.weight`` (fan_in, fan_out), ``layer{i}.bias``) and the
                    layer's activation: ``Relu``, ``LeakyRelu`` (alpha 0.01), ``Tanh``,
                    ``Sigmoid``, ``Identity``; the last layer's is the output activation
                    (``Softmax`` on axis 1, ``Sigmoid``, ``Identity``, ...)
output              ``probabilities`` (N, n_classes): what ``MLP.predict_proba`` returns,
                    columns in the order of the metadata entry ``classes``
==================  ===========================================================================

For float64 models ``leaky_relu`` becomes ``Max(z, 0.01 z)`` (equal for any slope in (0, 1)):
onnxruntime's CPU provider has no double ``LeakyRelu`` kernel. ``features=True`` exports a model
trained on float features instead of pixels: the input is then ``features`` and is used as given.
The model's metadata (``metadata_props``) holds ``classes``, ``sizes``, ``activations``,
``output``, ``dtype`` and ``input_scale`` as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np  # host side: the parameters are written as host arrays

from mlp_backend.functional import LEAKY_SLOPE
from mlp_backend.training.trainer import PIXEL_SCALE

__all__ = ["export_onnx", "to_onnx", "OPSET", "INPUT", "FEATURES_INPUT", "OUTPUT", "ONNX_HINT"]

OPSET = 13
INPUT, FEATURES_INPUT, OUTPUT = "pixels", "features", "probabilities"
ONNX_HINT = "ONNX export needs the onnx package: pip install 'mlp-backend[onnx]'"


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{ONNX_HINT} ({exc})") from None
    return onnx


def _activation(name: str, x: str, y: str, layer: int, dtype, helper, numpy_helper, inits: list) -> list:
    """The ONNX nodes computing activation ``name`` from ``x`` into ``y``."""
    tag = f"layer{layer}.{name}"
    if name == "relu":
        return [helper.make_node("Relu", [x], [y], name=tag)]
    if name == "leaky_relu":
        if dtype == np.float32:
            return [helper.make_node("LeakyRelu", [x], [y], name=tag, alpha=LEAKY_SLOPE)]
        slope = f"layer{layer}.leaky_slope"  # no double LeakyRelu kernel in onnxruntime's CPU provider
        inits.append(numpy_helper.from_array(np.asarray(LEAKY_SLOPE, dtype), slope))
        return [helper.make_node("Mul", [x, slope], [f"layer{layer}.scaled_z"], name=f"{tag}.mul"),
                helper.make_node("Max", [x, f"layer{layer}.scaled_z"], [y], name=f"{tag}.max")]
    if name == "tanh":
        return [helper.make_node("Tanh", [x], [y], name=tag)]
    if name == "sigmoid":
        return [helper.make_node("Sigmoid", [x], [y], name=tag)]
    if name == "identity":
        return [helper.make_node("Identity", [x], [y], name=tag)]
    if name == "softmax":
        return [helper.make_node("Softmax", [x], [y], name=tag, axis=1)]
    raise ValueError(f"cannot export activation {name!r} (layer {layer}) to ONNX: no ONNX form is written "
                     f"for it; exportable: {', '.join(EXPORTABLE)}")


EXPORTABLE = ("relu", "leaky_relu", "tanh", "sigmoid", "identity", "softmax")


def _resolve(model):
    """(MLP, class labels) from an MLP, a fitted MLPClassifier or a checkpoint path."""
    from mlp_backend.model import MLP
    if isinstance(model, MLP):
        return model, list(range(model.sizes[-1]))
    if hasattr(model, "model_") and hasattr(model, "classes_"):  # a fitted MLPClassifier
        return model.model_, model.classes_.tolist()
    if isinstance(model, (str, Path)):
        from mlp_backend.training.checkpoint import load_checkpoint  # the loading (and errors) of `evaluate`
        ckpt = load_checkpoint(model, device="cpu")
        return ckpt.model, list(ckpt.class_labels)
    raise TypeError(f"cannot export a {type(model).__name__}: pass an MLP, a fitted MLPClassifier "
                    "or a checkpoint path")


def to_onnx(model, *, features: bool = False, classes=None):
    """The checked ONNX ``ModelProto`` of ``model``: an MLP, a fitted MLPClassifier or a
    checkpoint path. ``classes`` (labels for the metadata) defaults to the classifier's or the
    checkpoint's, else 0..n_classes-1."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    from mlp_backend import __version__
    mlp, own_classes = _resolve(model)
    classes = own_classes if classes is None else list(classes)
    dtype = np.dtype(mlp.dtype_name)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    params = mlp.host_params()
    n_in, n_out = mlp.sizes[0], mlp.sizes[-1]
    inits, nodes = [], []
    x = FEATURES_INPUT if features else INPUT
    if features:
        in_doc = f"(N, {n_in}) features, used as given (the model was trained on float features); N is dynamic"
    else:
        inits.append(numpy_helper.from_array(np.asarray(PIXEL_SCALE, dtype), "pixel_scale"))
        nodes.append(helper.make_node("Mul", [x, "pixel_scale"], ["scaled_pixels"], name="scale_pixels"))
        in_doc = (f"(N, {n_in}) float pixels 0..255 (MNIST: white digit on black, 28x28 row-major), "
                  "scaled by 1/255 inside the graph; N is dynamic")
        x = "scaled_pixels"
    acts = [*mlp.activations, mlp.output]
    for i in range(1, mlp.n_layers + 1):
        w, b = f"layer{i}.weight", f"layer{i}.bias"
        inits += [numpy_helper.from_array(np.ascontiguousarray(params[f"w{i}"], dtype), w),
                  numpy_helper.from_array(np.ascontiguousarray(params[f"b{i}"], dtype), b)]
        z, a = f"layer{i}.z", (OUTPUT if i == mlp.n_layers else f"layer{i}.a")
        nodes.append(helper.make_node("Gemm", [x, w, b], [z], name=f"layer{i}.gemm"))
        nodes += _activation(acts[i - 1], z, a, i, dtype, helper, numpy_helper, inits)
        x = a
    what = "class probabilities" if mlp.output == "softmax" else f"output activations ({mlp.output})"
    out_doc = f"(N, {n_out}) {what}, columns in the order of the metadata entry 'classes'"
    graph = helper.make_graph(
        nodes, "mlp_backend_mlp",
        [helper.make_tensor_value_info(FEATURES_INPUT if features else INPUT, elem, ["N", n_in], doc_string=in_doc)],
        [helper.make_tensor_value_info(OUTPUT, elem, ["N", n_out], doc_string=out_doc)],
        inits,
        doc_string=(f"mlp-backend MLP {'-'.join(map(str, mlp.sizes))}, hidden activations "
                    f"{', '.join(mlp.activations) or 'none'}, output {mlp.output}, {dtype.name}: "
                    f"{'' if features else 'Mul(1/255), '}then Gemm + activation per layer"))
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="mlp-backend",
                              producer_version=__version__, ir_version=helper.find_min_ir_version_for(opsets),
                              doc_string=f"{graph.doc_string}. Input '{graph.input[0].name}': {in_doc}. "
                                         f"Output '{OUTPUT}': {out_doc}.")
    helper.set_model_props(proto, {
        "classes": json.dumps([c.tolist() if hasattr(c, "tolist") else c for c in classes]),
        "sizes": json.dumps(list(mlp.sizes)), "activations": json.dumps(list(mlp.activations)),
        "output": mlp.output, "dtype": dtype.name,
        "input_scale": json.dumps(None if features else PIXEL_SCALE)})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, *, overwrite: bool = False, features: bool = False, classes=None) -> Path:
    """Write ``model`` (an MLP, a fitted MLPClassifier or a checkpoint path) to ``path`` as
    ONNX (see :func:`to_onnx`); returns the path. An existing file is replaced only with
    ``overwrite``."""
    from mlp_backend.data.atomic import atomic_write_bytes
    path = Path(path)
    proto = to_onnx(model, features=features, classes=classes)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    data = proto.SerializeToString()
    return atomic_write_bytes(path, lambda f: f.write(data))


# ----- the CLI subcommand (registered by cli.py's PLUGINS) ----------------------------------

def register(subparsers) -> None:
    """Add ``mlp-backend export`` to the CLI."""
    p = subparsers.add_parser(
        "export", help="write a trained model as a standard ONNX graph",
        description="Export a checkpoint as ONNX (needs: pip install 'mlp-backend[onnx]'). The graph "
                    "takes 'pixels', (N, 784) float pixels 0..255, scales them by 1/255, runs Gemm + "
                    "activation per layer and outputs 'probabilities' (N, classes). Opset 13; float32 "
                    "and float64 models.")
    p.add_argument("model", metavar="MODEL", help="a checkpoint, e.g. runs/x/model.npz")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    p.add_argument("--features", action="store_true",
                   help="input 'features' used as given, for models trained on float features rather "
                        "than 0..255 pixels (no 1/255 scaling in the graph)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import sys
    try:
        _onnx()
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    out = Path(args.onnx)
    if out.exists() and not args.overwrite:  # before any work; export_onnx checks again
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    mlp, classes = _resolve(args.model)
    path = export_onnx(mlp, out, overwrite=args.overwrite, features=args.features, classes=classes)
    ops = " -> ".join(f"Gemm+{a}" for a in [*mlp.activations, mlp.output])
    print(f"wrote {path} ({path.stat().st_size:,} bytes, opset {OPSET}, {mlp.dtype_name}): "
          f"{FEATURES_INPUT if args.features else INPUT} (N, {mlp.sizes[0]}) -> "
          f"{'' if args.features else 'Mul(1/255) -> '}{ops} -> {OUTPUT} (N, {mlp.sizes[-1]})", flush=True)
    return 0
