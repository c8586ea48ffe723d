"""Splits: held-out users and items never reach fit; orders and negatives are fixed by seed."""

import numpy as np
import pytest

from conftest import tiny_dataset
from thaw.data.splits import chronological_order, make_split, read_split_folder
from thaw.errors import DataError, ThawError


def _pairs(inter):
    return set(zip(inter.user.tolist(), inter.item.tolist(), inter.ts.tolist()))


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
