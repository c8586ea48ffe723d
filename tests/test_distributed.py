"""Data-parallel training (thaw.distributed): two gloo processes on CPU take the same steps as
one process that sees every batch whole."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from thaw import distributed
from thaw.models.neural import TaskBatch, share_of

WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = WORKER.parent.parent


def _fit(name: str, params: dict, out: Path, nproc: int) -> list[dict[str, np.ndarray]]:
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "THAW_DIST_DEBUG": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = ([] if nproc == 1 else
                ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"])
    cmd = [sys.executable, *launcher, str(WORKER), name, json.dumps(params), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(nproc)]


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _without_key_bias(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Attention's key bias has a gradient of exactly zero in exact arithmetic (it adds one
    constant to a row of logits); in floats it is rounding noise, which Adam scales up to
    full-size steps of random sign, so it differs with the summation order and is left out."""
    out = dict(state)
    for k, v in state.items():
        if k.endswith("in_proj_bias"):
            third = len(v) // 3
            out[k] = np.concatenate([v[:third], v[2 * third:]])
    return out


@pytest.mark.parametrize("name, params", [
    ("melu", {"epochs": 2, "batch_size": 16}),
    ("sasrec", {"epochs": 2, "batch_size": 32, "dropout": 0.0, "dim": 16}),
])
def test_two_processes_take_the_steps_of_one(tmp_path, name, params):
    one = _without_key_bias(_fit(name, dict(params), tmp_path / "one", 1)[0])
    two = [_without_key_bias(s) for s in _fit(name, dict(params), tmp_path / "two", 2)]
    # the ranks hold the same weights, byte for byte, and they are one process's weights up to
    # the order in which float gradients were summed
    assert _max_difference(two[0], two[1]) == 0.0
    start = _without_key_bias(_fit(name, {**params, "epochs": 0}, tmp_path / "start", 1)[0])
    assert _max_difference(one, start) > 1e-2  # training moved the weights: the check means something
    assert _max_difference(one, two[0]) < 1e-5
    losses = [json.loads((tmp_path / d / f"history{r}.json").read_text())
              for d, r in (("one", 0), ("two", 0), ("two", 1))]
    assert losses[1] == losses[2]  # every rank reports the whole batch's loss
    assert np.allclose([e["loss"] for e in losses[0]], [e["loss"] for e in losses[1]], rtol=1e-4)


def test_a_dead_rank_ends_the_job_instead_of_hanging_it(tmp_path):
    started = time.monotonic()
    with pytest.raises(AssertionError, match="exitcode"):
        _fit("melu", {"epochs": 1, "_crash_rank": 1}, tmp_path / "crash", 2)
    assert time.monotonic() - started < 120


def test_one_process_keeps_the_whole_batch():
    import torch

    batch = TaskBatch({"mask": torch.ones(5, 3)}, {"mask": torch.ones(5, 2)})
    assert not distributed.active()
    assert distributed.share(7) == slice(0, 7)
    part, weight = share_of(batch)
    assert part is batch and weight == 1.0


def test_two_processes_share_out_an_evaluation_and_write_one_processs_results(tmp_path):
    """`thaw evaluate --nproc 2`: each rank fits its share of the models, rank 0 gathers and
    writes; the results are the single process's, cell for cell."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "THAW_DIST_DEBUG": "1"}
    args = ["evaluate", "--models", "random,pop,segment-pop,content", "--ks", "0,1,3",
            "--bootstrap", "10", "--jobs", "1", "--no-progress"]
    for nproc in (1, 2):
        done = subprocess.run([sys.executable, "-m", "thaw", *args, "--out", str(tmp_path / f"p{nproc}"),
                               "--nproc", str(nproc)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    shares = sorted(line for line in done.stderr.splitlines() if line.startswith("rank "))
    assert [s.split(" runs ")[0] for s in shares] == ["rank 0", "rank 1"], done.stderr[-3000:]
    assert "nothing" not in done.stderr  # both ranks fitted models
    for name in ("results.csv", "per_user.csv"):
        assert (tmp_path / "p1" / name).read_text() == (tmp_path / "p2" / name).read_text()
    assert "random" in (tmp_path / "p2" / "results.csv").read_text()


@pytest.mark.parametrize("device, message", [("tpu", "device must be cpu, cuda or cuda:N"),
                                             ("cuda", "no CUDA GPU")])
def test_a_device_that_cannot_train_is_refused_before_any_work(tmp_path, device, message):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, "-m", "thaw", "fit", "--model", "pop", "--out",
                           str(tmp_path / "m"), "--device", device],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "m").exists()
