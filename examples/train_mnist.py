"""Train an MLP on MNIST with the Python API, on any device.

    python examples/train_mnist.py                       # CPU (or CUDA if CuPy sees a GPU)
    python examples/train_mnist.py --device cuda --epochs 20
    python examples/train_mnist.py --device torch:cpu --out runs/example
    mpiexec -n 2 python examples/train_mnist.py          # data-parallel on 2 ranks (pip install 'mlp-backend[mpi]')

The same steps as `mlp-backend train`, spelled out: load the data, split off a validation
set, move the uint8 pixels to the device once, build the model, optimizer and trainer,
train, evaluate on the test set, save a checkpoint that loads on any device. Under
`mpiexec -n N` each of the N ranks runs this script: `init_distributed()` joins them, the
trainer splits every batch of 128 over them, and rank 0 alone prints and saves.
"""
import argparse

from mlp_backend.backends import get_backend
from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
from mlp_backend.data import load_dataset, train_val_split
from mlp_backend.training.distributed import init as init_distributed
from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.training.trainer import Trainer, evaluate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N, torch:cuda, ... (default: auto)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist or a path")
    ap.add_argument("--out", default="mnist_example.npz", help="where to save the checkpoint")
    args = ap.parse_args()

    dist = init_distributed()          # None unless started by `mpiexec -n N` (N > 1); never imports MPI then
    root = dist is None or dist.root   # rank 0 (or the only process) prints and saves
    backend = get_backend(args.device) if dist is None else dist.pick_device(args.device)  # one GPU per rank
    load = lambda: load_dataset(args.dataset)                        # noqa: E731  host uint8 arrays
    ds = load() if dist is None else dist.root_first(load)           # rank 0 downloads first, if needed
    x_tr, y_tr, x_val, y_val = train_val_split(ds.x_train, ds.y_train, 0.1, seed=0)

    # One transfer each; pixels stay uint8 on the device and are scaled there per batch.
    x, y = backend.asarray(x_tr), backend.asarray(y_tr, "int64")
    xv, yv = backend.asarray(x_val), backend.asarray(y_val, "int64")

    model = MLP([784, 256, 128, 10], activations="relu", output="softmax", loss="cross_entropy",
                init="he", device=backend, seed=0)
    optimizer = make_optimizer("adam", lr=1e-3)
    trainer = Trainer(model, optimizer, batch_size=128, seed=0,
                      schedule=make_schedule("cosine", 1e-3, args.epochs), dist=dist)
    if root:
        print(f"training {model} on {backend.label}" + (f", {dist.size} ranks" if dist else ""))
    trainer.fit(x, y, args.epochs, xv, yv)
    if not root:
        return

    loss_sum, correct = evaluate(model, backend.asarray(ds.x_test), backend.asarray(ds.y_test, "int64"))
    n = ds.n_test
    print(f"test accuracy {backend.to_float(correct) / n:.2%}, test loss {backend.to_float(loss_sum) / n:.4f}")

    path = save_checkpoint(args.out, model, optimizer, trainer)
    on_cpu = load_checkpoint(path, device="cpu")                     # a GPU-trained model, now on the CPU
    print(f"saved {path}; reloaded as {on_cpu.model} after epoch {on_cpu.epoch}")


if __name__ == "__main__":
    main()
