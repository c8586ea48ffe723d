import numpy as np
import pytest

from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic


@pytest.fixture(scope="session", autouse=True)
def _private_embedding_cache(tmp_path_factory):
    """Tests never write text embeddings into the user's own cache folder."""
    import os

    before = os.environ.get("THAW_CACHE_DIR")
    os.environ["THAW_CACHE_DIR"] = str(tmp_path_factory.mktemp("embeddings"))
    yield
    if before is None:
        os.environ.pop("THAW_CACHE_DIR", None)
    else:
        os.environ["THAW_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def synthetic() -> Dataset:
    return make_synthetic(n_users=120, n_items=80, seed=0)


def tiny_dataset(rows, users=None, items=None, name="tiny") -> Dataset:
    """A Dataset from (user, item, rating, ts) tuples with raw ids as given."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    return Dataset.from_frames(name, frame, users, items)


def history(items, ratings=None) -> Interactions:
    return Interactions.of(np.asarray(items), ratings)


@pytest.fixture(scope="session")
def tiny_stack(tmp_path_factory):
    """The service tests' model (tests/test_serve*.py): a stack fitted and saved as `thaw fit`
    does (validation users only choose routes)."""
    from thaw.eval.protocol import SplitValidator
    from thaw.persist import save
    from thaw.registry import make_model
    from thaw.stack import Stack

    data = make_synthetic(n_users=200, n_items=60, seed=1)
    split = make_split(data, "new-user", test_frac=0.0, val_frac=0.25, seed=0)
    members = [make_model(m, seed=0) for m in ("pop", "segment-pop", "content", "mf")]
    stack = Stack(members=members, validation_ks=(0, 1, 2, 3, 5, 10), min_users=5, seed=0)
    stack.set_task("next-item")
    stack.fit(split.train, validate=SplitValidator(split, "next-item"))
    stack.dataset = split.train
    return save(stack, tmp_path_factory.mktemp("serve") / "stack")
