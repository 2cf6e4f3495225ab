"""The comparison's candidates, each as a callable that runs and times one training epoch:
the GEMM floor, mlp-backend (graphs on or off), PyTorch eager, PyTorch's whole epoch as one
CUDA graph, and scikit-learn; and which of them run on which device.

All candidates train the same net (He init for ours, PyTorch's seeded default for its
peers, relu, softmax cross-entropy), the same batch size and dtype (float32), with plain SGD
or Adam at :data:`LR`, from data already in memory. PyTorch, CuPy and scikit-learn are
imported only when their candidate is built.
"""
from __future__ import annotations

import inspect
import time

import numpy as np

from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer
from mlp_backend.training.runner import MODES
from mlp_backend.training.trainer import Trainer

LR = {"sgd": 0.1, "adam": 1e-3}  # each optimizer's learning rate, for every candidate
OURS_EAGER = "mlp-backend graphs off"
TORCH_GRAPH = "torch graph-epoch"


# ----- mlp-backend and the floor --------------------------------------------------------------

def floor_epoch(sizes, n, batch, device):
    """The epoch's GEMMs only, into preallocated outputs."""
    shapes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    if device == "cpu":
        xpm, sync = np, (lambda: None)
    else:
        import cupy as xpm
        sync = xpm.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    W = [xpm.asarray(rng.standard_normal((a, b), dtype=np.float32)) for a, b in zip(sizes[:-1], sizes[1:])]
    bufs = {}
    for m in set(shapes):
        A = [xpm.asarray(rng.standard_normal((m, s), dtype=np.float32)) for s in sizes]
        Z = [xpm.empty((m, s), dtype=np.float32) for s in sizes]
        G = [xpm.empty_like(w) for w in W]
        bufs[m] = (A, Z, G)

    def run():
        sync()
        t0 = time.perf_counter()
        for m in shapes:
            A, Z, G = bufs[m]
            for i, w in enumerate(W):
                xpm.matmul(A[i], w, out=Z[i + 1])          # forward
                xpm.matmul(A[i].T, A[i + 1], out=G[i])    # dL/dW
                if i:
                    xpm.matmul(A[i + 1], w.T, out=Z[i])   # dL/da of the layer below
        sync()
        return time.perf_counter() - t0
    return run


def graph_kwargs(mode: "str | None") -> dict:
    """The ``Trainer`` keyword for CUDA-graph mode ``mode`` (``None``: none at all, the CPU
    benchmark's Trainer as always). A Trainer without the option runs eager, which is what
    ``off`` asks for and what ``auto`` falls back to; ``on`` cannot be honoured by it."""
    if mode is None:
        return {}
    if mode not in MODES:
        raise ValueError(f"cuda_graphs must be one of {', '.join(MODES)}, got {mode!r}")
    if "cuda_graphs" in inspect.signature(Trainer).parameters:
        return {"cuda_graphs": mode}
    if mode == "on":
        raise RuntimeError("--cuda-graphs on: this mlp_backend's Trainer has no cuda_graphs option, so it "
                           "cannot capture; use --cuda-graphs auto or off")
    return {}


def graph_status(trainer) -> str:
    """The trainer's one-line capture status after a fit ("captured ..." or "eager: why")."""
    return getattr(trainer, "graph_status", None) or "eager: this Trainer has no cuda_graphs option"


def ours_epoch(sizes, x, y, batch, device, lr=0.1, optimizer="sgd", cuda_graphs=None):
    """One epoch of mlp-backend. With ``cuda_graphs`` None (the CPU benchmark) the trainer's
    ``train_epoch``; with a mode, ``Trainer.fit`` one epoch further (the path that captures,
    with its one host sync per epoch). The callable's ``trainer`` attribute is the Trainer."""
    model = MLP(sizes, "relu", device=device, seed=0)
    b = model.backend
    xd, yd = b.asarray(x), b.asarray(y)
    tr = Trainer(model, make_optimizer(optimizer, lr), batch_size=batch, seed=0, progress="none",
                 log=lambda s: None, **graph_kwargs(cuda_graphs))

    def run():
        b.synchronize()
        t0 = time.perf_counter()
        if cuda_graphs is None:
            tr.train_epoch(xd, yd)
        else:
            tr.fit(xd, yd, tr.epoch + 1)
        b.synchronize()
        return time.perf_counter() - t0
    run.trainer = tr
    return run


# ----- PyTorch -------------------------------------------------------------------------------

def torch_net(sizes, x, y, device):
    """(net, x float32 scaled, y) for PyTorch on ``device`` ("cpu" or a CUDA device): the
    same layers as ours, PyTorch's default init (seeded), the data pre-scaled in memory."""
    import torch
    dev = torch.device("cuda" if device != "cpu" else "cpu")
    torch.manual_seed(0)  # PyTorch's default init from a fixed draw, as ours from seed 0
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(dev)
    xt = torch.from_numpy(x).to(dev).float().mul_(1 / 255)  # pre-scaled: float32 in memory
    yt = torch.from_numpy(y).to(dev)
    return net, xt, yt


def torch_optimizer(name, params, lr, **kw):
    """PyTorch's SGD or Adam (one of :data:`LR`) over ``params``."""
    import torch
    if name not in LR:
        raise ValueError(f"the benchmark's optimizers are {', '.join(LR)}, got {name!r}")
    return (torch.optim.SGD if name == "sgd" else torch.optim.Adam)(params, lr=lr, **kw)


def torch_epoch(sizes, x, y, batch, device, lr=0.1, optimizer="sgd"):
    """One epoch of PyTorch eager: a seeded permutation, then ``zero_grad``, ``backward`` and
    ``step`` per batch. The callable's ``net`` attribute is the net."""
    import torch
    net, xt, yt = torch_net(sizes, x, y, device)
    dev = xt.device
    opt = torch_optimizer(optimizer, net.parameters(), lr)
    lossf = torch.nn.CrossEntropyLoss()
    n = xt.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(0)

    def run():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(dev)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    run.net = net
    return run


def static_step(net, xs, ys, batch, lr, opt=None):
    """``step(i)``: one training step of ``net`` on rows ``i*batch:(i+1)*batch`` of the static
    buffers ``xs``, ``ys``, in the form a CUDA graph can capture (no ``zero_grad``, no host
    sync): mean cross-entropy, ``autograd.grad``, then SGD with ``lr`` as one ``_foreach_add_``
    (``opt`` None) or ``opt.step()`` on the gradients. The same maths as the eager peer's
    ``zero_grad``/``backward``/``step``, on any device."""
    import torch
    params = list(net.parameters())
    lossf = torch.nn.CrossEntropyLoss()

    def step(i):
        rows = slice(i * batch, (i + 1) * batch)
        loss = lossf(net(xs[rows]), ys[rows])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            if opt is None:
                torch._foreach_add_(params, grads, alpha=-lr)
            else:
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
    return step


def torch_graph_epoch(sizes, x, y, batch, lr=0.1, optimizer="sgd", warmup_steps=3):
    """PyTorch with the whole epoch as one CUDA graph (as ../shared/tools/gpu/torch_cuda_ref.py),
    the near launch-free peer: the epoch's full batches (the remainder batch is left out)
    captured once with ``torch.cuda.CUDAGraph``, each step the eager peer's maths (forward,
    cross-entropy, gradients, SGD or Adam); each timed epoch draws a permutation, gathers the
    rows into the graph's static buffers and replays the graph.

    Returns the timing callable; its attributes ``net``, ``step(i)`` (one eager step on the
    static buffers), ``params``, ``optimizer`` (None for SGD) and ``steps`` let a test replay
    the graph's work eagerly."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products in float32, as ours
    net, xt, yt = torch_net(sizes, x, y, "cuda")
    params = list(net.parameters())
    n = xt.shape[0]
    steps = n // batch
    if steps < 1:
        raise ValueError(f"torch graph-epoch: batch {batch} is larger than the {n} rows")
    xs, ys = xt[:steps * batch].clone(), yt[:steps * batch].clone()
    # Adam's step count and moments must live on the device for a replayed graph to advance them.
    opt = torch_optimizer(optimizer, params, lr, capturable=True, foreach=True) if optimizer != "sgd" else None
    step = static_step(net, xs, ys, batch, lr, opt)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream: lazy state, cuBLAS handles
        for i in range(min(warmup_steps, steps)):
            step(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(steps):
            step(i)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def run():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(xt.device)[:steps * batch]
        torch.index_select(xt, 0, perm, out=xs)
        torch.index_select(yt, 0, perm, out=ys)
        graph.replay()
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    run.net, run.step, run.params, run.steps, run.graph, run.optimizer = net, step, params, steps, graph, opt
    return run


# ----- scikit-learn ---------------------------------------------------------------------------

def sklearn_epoch(sizes, x, y, batch, lr=0.1):
    """One epoch of scikit-learn's ``MLPClassifier`` (plain SGD: no momentum, no L2) by ``partial_fit``."""
    import warnings
    from sklearn.neural_network import MLPClassifier
    xf = x.astype(np.float32) / np.float32(255)
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), solver="sgd", learning_rate_init=lr,
                        momentum=0.0, alpha=0.0, batch_size=batch, shuffle=True, random_state=0)
    classes = np.arange(sizes[-1])

    def run():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(xf, y, classes=classes)
        return time.perf_counter() - t0
    return run


# ----- which candidates run ---------------------------------------------------------------------

def candidate_names(device: str, cuda_graphs: "str | None" = "auto", peers: bool = True,
                    optimizer: str = "sgd") -> list[str]:
    """The candidates of one comparison, in the order each repeat runs them. On the CPU:
    the floor, mlp-backend, PyTorch and scikit-learn (SGD only). On CUDA: the floor,
    mlp-backend (``cuda_graphs`` mode), mlp-backend with graphs off (unless the mode is
    off), PyTorch eager and PyTorch's whole epoch as one CUDA graph."""
    if device == "cpu":
        return ["floor", "mlp-backend"] + (["torch"] + (["sklearn"] if optimizer == "sgd" else []) if peers else [])
    return (["floor", "mlp-backend"] + ([OURS_EAGER] if cuda_graphs != "off" else [])
            + (["torch", TORCH_GRAPH] if peers else []))


def candidates(sizes, x, y, *, batch: int, device: str, optimizer: str = "sgd",
               cuda_graphs: "str | None" = None, peers: bool = True, log=print) -> dict:
    """{name: callable timing one epoch} for :func:`candidate_names`; a peer whose library
    is missing is left out with a note."""
    n, lr = x.shape[0], LR[optimizer]
    cuda = device != "cpu"
    mode = (cuda_graphs or "auto") if cuda else None
    cands = {}
    for name in candidate_names(device, mode, peers, optimizer):
        try:
            if name == "floor":
                cands[name] = floor_epoch(sizes, n, batch, device)
            elif name == "mlp-backend":
                cands[name] = ours_epoch(sizes, x, y, batch, "cuda" if cuda else "cpu", lr, optimizer, mode)
            elif name == OURS_EAGER:
                cands[name] = ours_epoch(sizes, x, y, batch, "cuda", lr, optimizer, "off")
            elif name == "torch":
                cands[name] = torch_epoch(sizes, x, y, batch, device, lr, optimizer)
            elif name == TORCH_GRAPH:
                cands[name] = torch_graph_epoch(sizes, x, y, batch, lr, optimizer)
            elif name == "sklearn":
                cands[name] = sklearn_epoch(sizes, x, y, batch, lr)
        except ImportError as exc:
            log(f"  ({name}: {exc.name or exc} not installed: skipped)")
    return cands
