"""One process of tests/test_distributed.py: fit a model on the synthetic data and save every
rank's trained parameters as .npz, so the test can compare ranks with each other and with a
single process. Run directly (one process) or under ``python -m torch.distributed.run``."""

import json
import os
import sys
from pathlib import Path

import numpy as np

from thaw import distributed
from thaw.data.synthetic import make_synthetic
from thaw.registry import make_model


def main() -> None:
    name, params, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    distributed.start()
    if distributed.rank() == params.pop("_crash_rank", -1):
        os._exit(3)  # a rank that dies before its first collective
    model = make_model(name, seed=0, **params)
    model.fit(make_synthetic(n_users=120, n_items=80, seed=0))
    state = {k: v.detach().numpy() for k, v in model.net.state_dict().items()}
    np.savez(out / f"rank{distributed.rank()}.npz", **state)
    (out / f"history{distributed.rank()}.json").write_text(json.dumps(model.history))
    distributed.stop()


if __name__ == "__main__":
    main()
