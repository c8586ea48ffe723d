"""Splits: held-out users and items never reach fit; orders and negatives are fixed by seed."""

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_dataset
from thaw.data.splits import chronological_order, make_split, read_split_folder
from thaw.errors import DataError, ThawError


def _pairs(inter):
    return set(zip(inter.user.tolist(), inter.item.tolist(), inter.ts.tolist(), strict=False))


def test_new_user_split_keeps_every_held_out_users_data_out_of_training(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    train_users = set(split.train.interactions.user.tolist())
    held = set(split.val) | set(split.test)
    assert held and not (held & train_users)
    assert not (set(split.val) & set(split.test))
    # Nothing lost: train + held-out sequences are exactly the data set.
    total = len(split.train.interactions) + sum(len(s) for s in {**split.val, **split.test}.values())
    assert total == len(synthetic.interactions)


def test_new_item_split_keeps_held_out_items_out_of_training(synthetic):
    split = make_split(synthetic, "new-item", seed=1)
    trained_items = set(split.train.interactions.item.tolist())
    assert len(split.held_items) and not (set(split.held_items.tolist()) & trained_items)
    for seq in {**split.val, **split.test}.values():
        assert set(seq.item.tolist()) <= set(split.held_items.tolist())
    assert split.users_known  # warm users, cold items


def test_both_split_holds_out_users_and_items(synthetic):
    split = make_split(synthetic, "both", seed=2)
    train = split.train.interactions
    assert not (set(split.test) & set(train.user.tolist()))
    assert not (set(split.held_items.tolist()) & set(train.item.tolist()))


def test_temporal_split_trains_only_on_the_past(synthetic):
    split = make_split(synthetic, "temporal", seed=0)
    first_test = min(int(s.ts.min()) for s in split.test.values())
    first_val = min(int(s.ts.min()) for s in split.val.values())
    assert split.train.interactions.ts.max() < min(first_test, first_val)
    assert not (set(split.test) & set(split.train.interactions.user.tolist()))


def test_warm_split_trains_on_each_held_users_past_and_asks_about_their_future(synthetic):
    split = make_split(synthetic, "warm", seed=0)
    train = split.train.interactions
    assert split.users_known
    for user, seq in split.test.items():
        past = train.ts[train.user == user]
        assert len(past) >= len(seq) and past.max() <= seq.ts.min()
        assert not (_pairs(seq) & _pairs(train.take(train.user == user)))


def test_sequences_are_chronological_and_ties_are_not_ordered_by_item_id():
    # One user, ten items all rated in the same second: any order is a tie, so the split
    # must shuffle them by seed rather than sort them by id.
    rows = [("a", f"i{j}", 3.0, 100) for j in range(10)] + [("b", "i0", 4.0, 5)] * 1
    data = tiny_dataset(rows)
    orders = {tuple(data.interactions.take(chronological_order(data.interactions, s)).item)
              for s in range(6)}
    assert len(orders) > 1, "ties must be broken by a seeded shuffle"
    assert orders != {tuple(sorted(next(iter(orders))))}
    inter = data.interactions.take(chronological_order(data.interactions, 0))
    for u in np.unique(inter.user):
        assert np.all(np.diff(inter.ts[inter.user == u]) >= 0)
    again = data.interactions.take(chronological_order(data.interactions, 0))
    assert np.array_equal(inter.item, again.item)


def test_negatives_are_never_interacted_and_fixed_by_seed(synthetic):
    a = make_split(synthetic, "new-user", seed=5)
    b = make_split(synthetic, "new-user", seed=5)
    for user, seq in a.test.items():
        neg = a.negatives[user]
        assert len(neg) == min(100, synthetic.n_items - len(np.unique(seq.item)))
        assert not (set(neg.tolist()) & set(seq.item.tolist()))
        assert np.array_equal(neg, b.negatives[user])
    c = make_split(synthetic, "new-user", seed=6)
    assert set(a.test) != set(c.test)


def test_bad_split_arguments_are_user_errors(synthetic):
    with pytest.raises(ThawError, match="split kind"):
        make_split(synthetic, "sideways")
    with pytest.raises(ThawError, match="fractions"):
        make_split(synthetic, test_frac=0.8, val_frac=0.3)


def _write_external(folder, rows, negatives=None, header="user,item,rating,ts,role"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    if negatives is not None:
        (folder / "negatives.csv").write_text("user,item\n" + "\n".join(negatives) + "\n")
    return folder


def test_external_split_is_used_exactly_as_given(tmp_path):
    rows = [f"w{u},i{i},4,{i},train" for u in range(3) for i in range(5)]
    rows += ["t1,i3,5,10,test", "t1,i1,2,20,test", "t1,i4,3,30,test", "v1,i2,4,1,val", "v1,i0,3,2,val"]
    folder = _write_external(tmp_path / "s", rows, ["t1,i0", "t1,i2", "v1,i1"])
    split = read_split_folder(folder)
    users = split.train.user_ids
    t1 = int(np.flatnonzero(users == "t1")[0])
    assert [split.train.item_ids[i] for i in split.test[t1].item] == ["i3", "i1", "i4"]
    assert sorted(split.train.item_ids[split.negatives[t1]]) == ["i0", "i2"]
    assert set(split.train.interactions.user.tolist()) == {
        int(np.flatnonzero(users == f"w{u}")[0]) for u in range(3)}


def test_external_split_pos_column_fixes_the_order(tmp_path):
    rows = ["w,i0,4,0,train,0", "t,i1,5,7,test,2", "t,i2,5,7,test,0", "t,i3,5,7,test,1"]
    folder = _write_external(tmp_path / "p", rows, header="user,item,rating,ts,role,pos")
    split = read_split_folder(folder)
    (seq,) = split.test.values()
    assert [split.train.item_ids[i] for i in seq.item] == ["i2", "i3", "i1"]


@pytest.mark.parametrize("rows, negatives, message, line, column", [
    (["a,i1,4,1,train", "b,i2,x,2,test"], None, "not a number", 3, "rating"),
    (["a,i1,4,1,train", "b,i2,3,2,holdout"], None, "role must be", 3, "role"),
    (["a,i1,4,1,train", "b,i2,3,2,test"], ["b,i9"], "unknown item", 2, "item"),
    (["a,i1,4,1,train", "a,i2,3,2,test"], None, "held out entirely", None, "role"),
])
def test_external_split_errors_name_file_line_and_column(tmp_path, rows, negatives, message, line, column):
    folder = _write_external(tmp_path / "bad", rows, negatives)
    with pytest.raises(DataError, match=message) as info:
        read_split_folder(folder)
    assert info.value.line == line and info.value.column == column
    assert info.value.file and info.value.file.endswith(".csv")


def test_external_split_missing_column_and_unknown_dataset_ids(tmp_path, synthetic):
    folder = _write_external(tmp_path / "m", ["a,i1,4,train"], header="user,item,rating,role")
    with pytest.raises(DataError, match="missing column") as info:
        read_split_folder(folder)
    assert info.value.column == "ts"
    folder = _write_external(tmp_path / "u", ["u1,i1,4,1,train", "nobody,i2,3,2,test"])
    with pytest.raises(DataError, match="unknown user id 'nobody'") as info:
        read_split_folder(folder, synthetic)
    assert info.value.line == 3
    with pytest.raises(DataError, match="no interactions.csv"):
        read_split_folder(tmp_path / "absent")


@pytest.mark.filterwarnings("ignore::thaw.data.splits.MissingFeaturesWarning")
@pytest.mark.parametrize("negatives, message, line", [
    (["t1,i0", "t1,i3", "v1,i1"], "no negative for user 't1'.*interactions.csv line 2", 3),  # target
    (["t1,i0", "t1,i4", "v1,i1"], "no negative for user 't1'.*interactions.csv line 4", 3),  # later
    (["t1,i0", "v1,i1", "v1,i2"], "no negative for user 'v1'", 4),
    (["t1,i0", "v1,i1", "t1,i0"], "'i0' is listed twice for user 't1'", 4),
])
def test_external_negatives_never_name_the_users_own_items_nor_repeat(tmp_path, negatives, message,
                                                                      line):
    rows = ["t1,i3,5,10,test", "t1,i1,2,20,test", "t1,i4,3,30,test", "v1,i2,4,1,val",
            "v1,i0,3,2,val", "w,i1,4,1,train"]
    folder = _write_external(tmp_path / "n", rows, negatives)
    with pytest.raises(DataError, match=message) as info:
        read_split_folder(folder)
    assert info.value.line == line and info.value.column == "item"
    assert info.value.file.endswith("negatives.csv")


def _write_features(folder, users=None, items=None):
    if users is not None:
        (folder / "users.csv").write_text("\n".join(users) + "\n")
    if items is not None:
        (folder / "items.csv").write_text("\n".join(items) + "\n")


FEATURE_ROWS = ["w,i0,4,1,train", "w,i1,3,2,train", "t,i1,5,7,test", "t,i2,5,8,test"]


def test_external_split_carries_its_own_users_and_items(tmp_path):
    from thaw.data.splits import MissingFeaturesWarning

    bare = _write_external(tmp_path / "bare", FEATURE_ROWS)
    with pytest.warns(MissingFeaturesWarning, match="no user features.*no item features.*--dataset"):
        read_split_folder(bare)
    folder = _write_external(tmp_path / "f", FEATURE_ROWS)
    _write_features(folder, ["user,gender,age,occupation", "w,F,31,writer", "t,M,,"],
                    ['item,title,genres,year', 'i0,"Dogs, cats",Comedy|Drama,1995',
                     "i1,Space,Sci-Fi,", "i2,Rain,,1990", "i9,Never rated,Drama,2001"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingFeaturesWarning)
        split = read_split_folder(folder)
    data = split.train
    w, t = (int(np.flatnonzero(data.user_ids == u)[0]) for u in ("w", "t"))
    assert data.profile(w) == {"gender": "F", "age": 31.0, "occupation": "writer"}
    assert data.profile(t) == {"gender": "M"}
    items = data.item_features.set_index(pd.Index(data.item_ids))
    assert items.loc["i0", "title"] == "Dogs, cats" and items.loc["i0", "genres"] == ("Comedy", "Drama")
    assert items.loc["i2", "genres"] == () and items.loc["i2", "year"] == 1990.0
    assert "i9" in set(data.item_ids)  # in the catalogue though nobody rated it yet
    # Only the users file: the warning names what is still missing.
    only_users = _write_external(tmp_path / "u", FEATURE_ROWS)
    _write_features(only_users, ["user,gender", "w,F", "t,M"])
    with pytest.warns(MissingFeaturesWarning, match="no item features") as record:
        read_split_folder(only_users)
    assert "no user features" not in str(record[0].message)


def test_external_split_features_replace_the_data_sets(tmp_path, synthetic):
    rows = ["u1,i1,4,1,train", "u1,i2,4,2,train", "u2,i3,3,3,test", "u2,i4,3,4,test"]
    folder = _write_external(tmp_path / "d", rows)
    _write_features(folder, items=["item,title", "i1,First", "i3,Third"])
    split = read_split_folder(folder, synthetic)
    assert list(split.train.item_features.columns) == ["title"]
    assert split.train.item_features["title"].iloc[synthetic.item_index(["i3"])[0]] == "Third"
    assert split.train.user_features.equals(synthetic.user_features)


@pytest.mark.parametrize("users, items, file, message, line, column", [
    (["id,gender", "w,F"], None, "users.csv", "missing column 'user'", 1, "user"),
    (["user,gender", "w,F", "w,M"], None, "users.csv", "user listed twice", 3, "user"),
    (["user,age", "w,31", "t,old"], None, "users.csv", "age is not a number", 3, "age"),
    (["user,age", ",31"], None, "users.csv", "missing user id", 2, "user"),
    (None, ["item,title,year", "i0,A,1990", "i1,B,soon"], "items.csv", "year is not a number", 3, "year"),
    (None, ["item,title", "i0,A,extra"], "items.csv", "malformed line", 2, None),
])
def test_external_feature_files_errors_name_file_line_and_column(tmp_path, users, items, file,
                                                                 message, line, column):
    folder = _write_external(tmp_path / "e", FEATURE_ROWS)
    _write_features(folder, users, items)
    with pytest.raises(DataError, match=message) as info:
        read_split_folder(folder)
    assert info.value.file.endswith(file)
    assert info.value.line == line and info.value.column == column


def test_external_feature_ids_must_be_known_with_a_data_set(tmp_path, synthetic):
    folder = _write_external(tmp_path / "k", ["u1,i1,4,1,train", "u2,i3,3,3,test"])
    _write_features(folder, ["user,gender", "u1,F", "stranger,M"])
    with pytest.raises(DataError, match="unknown user id") as info:
        read_split_folder(folder, synthetic)
    assert info.value.line == 3 and info.value.column == "user"


@pytest.mark.filterwarnings("ignore::thaw.data.splits.MissingFeaturesWarning")
def test_pos_fixes_the_order_models_train_on(tmp_path):
    from thaw.meta.metacsr import SequenceTasks

    # ts says i0, i1, i2, i3 for the training user; pos says i3, i1, i0, i2.
    rows = ["w,i0,4,1,train,2", "w,i1,4,2,train,1", "w,i2,4,3,train,3", "w,i3,4,4,train,0",
            "t,i1,5,7,test,0", "t,i2,5,8,test,1"]
    folder = _write_external(tmp_path / "o", rows, header="user,item,rating,ts,role,pos")
    split = read_split_folder(folder)
    train = split.train.interactions
    assert train.pos is not None
    ordered = train.take(chronological_order(train, 0))
    assert [split.train.item_ids[i] for i in ordered.item] == ["i3", "i1", "i0", "i2"]
    tasks = SequenceTasks(split.train, max_len=5, max_query=2, n_negatives=1, seed=0)
    (sequence,) = tasks.sequences.values()
    assert [split.train.item_ids[i] for i in sequence] == ["i3", "i1", "i0", "i2"]


def test_external_split_duplicates_and_ratings_off_the_scale(tmp_path):
    rows = [f"w{u},i{i},{1 + (u + i) % 5},{i},train" for u in range(30) for i in range(8)]
    rows += ["t1,i3,5,10,test", "t1,i1,2,20,test", "t1,i3,5,10,test"]
    with pytest.warns(UserWarning, match=r"1 row repeats .*first at line 244"):
        split = read_split_folder(_write_external(tmp_path / "dup", rows))
    assert [len(s) for s in split.test.values()] == [2]
    rows[5] = "w0,i5,99,5,train"
    with pytest.raises(DataError, match="far outside") as info:
        read_split_folder(_write_external(tmp_path / "scale", rows))
    assert info.value.line == 7 and info.value.column == "rating"


def test_fraction_messages_say_what_is_wrong(synthetic):
    with pytest.raises(ThawError, match=r"test_frac=1\.5: a fraction must be at least 0 and below 1"):
        make_split(synthetic, test_frac=1.5)
    with pytest.raises(ThawError, match=r"test_frac=0 holds out no test users"):
        make_split(synthetic, "new-item", test_frac=0)
