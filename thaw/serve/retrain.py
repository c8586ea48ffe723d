"""``thaw retrain``: refit a served model from what its store has gathered, so the loop from a
new user's first click to a model trained on it runs end to end.

The new training data is the saved model's own (``model.dataset``: for a model from ``thaw
fit``, every user's interactions, validation users' included) plus every event in the
store, over the model's items plus the items created through the API (their features and
text as stored) and every user the store knows (profiles as stored). The model is refitted
as ``thaw fit`` fits it: the same kind with the same settings (the saved instance is fitted
again), validation users drawn from the new data for model selection and the stack's routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from thaw.data.schema import Dataset
from thaw.errors import ThawError
from thaw.serve.store import Store


def store_dataset(store: Store, base: Dataset) -> tuple[Dataset, int]:
    """The saved model's data plus the store's events, items and profiles; and how many
    events came from the store."""
    events = store.all_events()
    default = float(base.interactions.rating.mean()) if len(base.interactions) else 1.0
    own = base.interactions
    ratings = pd.DataFrame({"user": base.user_ids[own.user].astype(str), "item": base.item_ids[own.item].astype(str),
                            "rating": own.rating, "ts": own.ts})
    stored = pd.DataFrame({"user": [e["user_id"] for e in events], "item": [e["item_id"] for e in events],
                           "rating": [default if e["rating"] is None else e["rating"] for e in events],
                           "ts": [e["ts"] for e in events]}, columns=["user", "item", "rating", "ts"])
    items = _items(store, base)
    users = _users(store, base, {e["user_id"] for e in events})
    frame = pd.concat([ratings, stored], ignore_index=True)  # the store's rows last (see retrain)
    data = Dataset.from_frames(f"{base.name}+store", frame, users=users, items=items,
                               rating_scale=base.rating_scale, source=store.safe_url)
    return data, len(stored)


def _items(store: Store, base: Dataset) -> pd.DataFrame:
    frame = base.item_features.copy()
    frame.index = base.item_ids.astype(str)
    known = set(frame.index)
    rows = {r["id"]: r for r in store.items_changed_since(-1) if r["id"] not in known}
    if not rows:
        return frame
    new = []
    for row in rows.values():
        features = dict(row["features"])
        if "title" in frame.columns and not features.get("title") and row.get("text"):
            features["title"] = row["text"]
        if isinstance(features.get("genres"), list):
            features["genres"] = tuple(features["genres"])
        new.append({c: features.get(c) for c in frame.columns})
    return pd.concat([frame, pd.DataFrame(new, index=list(rows), columns=frame.columns)])


def _users(store: Store, base: Dataset, with_events: set[str]) -> pd.DataFrame:
    frame = base.user_features.copy()
    frame.index = base.user_ids.astype(str)
    ids = with_events - set(frame.index)
    profiles = [store.user(u) for u in sorted(ids)]
    new = pd.DataFrame([{c: (p or {}).get("profile", {}).get(c) for c in frame.columns} for p in profiles],
                       index=sorted(ids), columns=frame.columns)
    return pd.concat([frame, new]) if len(new) else frame


def retrain(db: str, model_dir: str | Path, out: str | Path, *, val_frac: float = 0.1,
            seed: int = 0) -> dict[str, Any]:
    """Refit the model in ``model_dir`` on its data plus the store's and save it to ``out``."""
    from thaw.data.splits import make_split
    from thaw.eval.protocol import SplitValidator
    from thaw.persist import load, save

    model = load(model_dir)
    base = getattr(model, "dataset", None)
    if not isinstance(base, Dataset):
        raise ThawError(f"{model_dir} holds no data set to retrain from; save it with `thaw fit`")
    store = Store(db)
    try:
        try:
            found = store.version()
        except SQLAlchemyError:
            found = None
        if found is None:
            raise ThawError(f"{store.safe_url} holds no thaw store (start `thaw serve` on it first)")
        data, from_store = store_dataset(store, base)
    finally:
        store.close()
    split = make_split(data, "new-user", test_frac=0.0, val_frac=val_frac, seed=seed)
    task = getattr(model, "task", "next-item")
    if hasattr(model, "fitted_members"):
        model.fitted_members = False  # a stack refits its members too
    model.set_task(task)
    model.fit(split.train, validate=SplitValidator(split, task))
    # What goes with the model is its data without the store's events (the service adds
    # those from the store, so they must not be there twice) over the grown id space: the next
    # retrain then starts from the same place and reads the store's events again.
    model.dataset = data.with_interactions(data.interactions.take(slice(0, len(data.interactions) - from_store)),
                                           name=base.name)
    path = save(model, out)
    return {"path": path, "interactions": len(data.interactions), "from_store": from_store,
            "users": data.n_users, "items": data.n_items, "model": model}
