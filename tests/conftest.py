import numpy as np
import pytest

from thaw.data.schema import Dataset, Interactions
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
