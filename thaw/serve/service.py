"""The service without HTTP: a saved model, the store, the catalogue and a per-user cache.

A request becomes a ``Context`` built from the store (the user's profile, and their stored
events after any training interactions the model's data set has for them) and the model
answers it: the service has no model logic of its own. Every user is treated as the cold-start
evaluation treats a held-out user (``Context(user=None)`` with their history), so a user's
next event moves them along the stack's bands on their very next request.

Items the model was not fitted with (a ``PUT /v1/items`` after the fit) are scored by the
stack's content member, whose arrays are extended with the new items' vectors on arrival
(``ContentExtension``); the other members abstain on them. Answers are cached per user in a
bounded LRU, stamped with everything they depend on (the user's profile revision and last
event, the catalogue revision), so an event posted through any worker invalidates them.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from thaw.data.features import segment_key
from thaw.data.schema import Dataset, Interactions
from thaw.errors import DataError, ThawError
from thaw.models.base import Context, Recommender
from thaw.serve.exploration import PriorThompson
from thaw.serve.metrics import Metrics
from thaw.serve.store import EventsWritten, Store, UnknownItems

DEFAULT_CACHE = 4096
# Exploration, as the overview recommends it: the first two slots, among the stack's top 20.
EXPLORE_SLOTS, EXPLORE_POOL, EXPLORE_PROPENSITY_DRAWS = 2, 20, 200
# The exploration prior: the stack's scores over the pool, as like-probabilities, weigh as many
# pseudo-observations per arm (thaw.serve.exploration.PriorThompson).
EXPLORE_PRIOR_STRENGTH = 10.0


@dataclass(frozen=True)
class Served:
    """What one request is given: items with scores, the answer they came from, and for an
    explored slate its id and the propensity of each explored item."""

    items: list[tuple[str, float]]
    answer: Answer
    cached: bool
    slate_id: str | None = None
    explored: dict[str, float] | None = None


@dataclass(frozen=True)
class Answer:
    """The model's answer for one user state: a score per catalogue item and how it was made."""

    scores: np.ndarray
    seen: np.ndarray
    route: dict[str, Any]
    k: int
    catalogue_size: int


class LRU:
    """A bounded, thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)

    def pop(self, key: Any) -> None:
        with self.lock:
            self.data.pop(key, None)

    def __len__(self) -> int:
        return len(self.data)


def item_documents_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """TF-IDF documents for items given as store rows (features: title, genres, year; text),
    built by the same function as the catalogue's, with the free text after the title."""
    from thaw.data.features import item_documents

    frame = pd.DataFrame({
        "title": [" ".join(x for x in (str(r["features"].get("title") or ""), r.get("text") or "") if x)
                  for r in rows],
        "genres": [tuple(r["features"].get("genres") or ()) for r in rows],
        "year": [r["features"].get("year") for r in rows],
    })
    return item_documents(SimpleNamespace(item_features=frame, n_items=len(rows)))  # type: ignore[arg-type]


class ContentExtension:
    """Lets a fitted content member score items added after its fit.

    Every per-item array of the member is kept as fitted and re-made with one more entry per
    new item: the item's vector (TF-IDF with the vocabulary of the fit, rebuilt and checked
    against the fitted vectors; or the MiniLM embedding), and what an item without training
    interactions has elsewhere (no popularity, the global mean rating, no users). Found by
    shape, so a member that gains an array keeps working; ``check`` scores once to be sure.
    """

    def __init__(self, content: Recommender, data: Dataset) -> None:
        self.content = content
        self.n_base = data.n_items
        n = data.n_items
        self.base = {a: v for a, v in vars(content).items()
                     if (isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == n and v.dtype.kind == "f")
                     or (sp.issparse(v) and a != "vectors" and v.shape[1] == n)}
        self.vectors = getattr(content, "vectors", None)
        self.embed = self._embedder(content, data)
        self.rows: dict[str, Any] = {}  # new item id -> its vector row

    @staticmethod
    def _embedder(content: Any, data: Dataset) -> Any:
        from thaw.data.features import item_documents

        vectors = getattr(content, "vectors", None)
        if vectors is None:
            return None
        if getattr(content, "encoder", "tfidf") == "minilm":
            from thaw.models.content import MINILM_NAME, EmbeddingCache, embed_items

            def minilm(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
                texts = [" ".join(x for x in (str(r["features"].get("title") or ""), r.get("text") or "") if x)
                         for r in rows]
                return embed_items(texts, EmbeddingCache(MINILM_NAME, content.cache_dir))
            return minilm
        from sklearn.feature_extraction.text import TfidfVectorizer

        # The content member's own settings (thaw/models/content.py), checked below: a
        # vectorizer that does not reproduce the fitted vectors embeds nothing.
        vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w[\w']*\b", sublinear_tf=True, lowercase=True)
        refit = vectorizer.fit_transform(item_documents(data)).tocsr()
        if refit.shape != vectors.shape or abs(refit - vectors).max() > 1e-9:
            return None
        return lambda rows: vectorizer.transform(item_documents_of(rows)).tocsr()

    def update(self, rows: Sequence[Mapping[str, Any]], order: Sequence[str]) -> None:
        """Embed ``rows`` (new or changed new items) and re-make the member's arrays for the
        new items in ``order`` (the catalogue's order after the model's own items)."""
        if rows and self.embed is not None:
            matrix = self.embed(rows)
            for i, row in enumerate(rows):
                self.rows[row["id"]] = matrix[i]
        content, n_total = self.content, self.n_base + len(order)
        for attr, value in self.base.items():
            if sp.issparse(value):
                grown = value.copy()
                grown.resize((grown.shape[0], n_total))
                setattr(content, attr, type(value)(grown))
            else:
                fill = float(getattr(content, "global_mean", 0.0)) if attr == "item_means" else 0.0
                setattr(content, attr, np.concatenate([value, np.full(len(order), fill, dtype=value.dtype)]))
        base = self.vectors
        if base is not None and order:
            if sp.issparse(base):
                empty = sp.csr_matrix((1, base.shape[1]))
                base = sp.vstack([base, *(self.rows.get(i, empty) for i in order)]).tocsr()
            else:
                empty = np.zeros(base.shape[1], dtype=base.dtype)
                base = np.vstack([base, *(np.asarray(self.rows.get(i, empty)).ravel() for i in order)])
        if content.fitted_on is not None:  # its indices now reach the new items too
            content.fitted_on = (content.fitted_on[0], n_total)
        content.vectors = base  # last: any index a request holds is valid in every array

    def check(self, n_total: int) -> bool:
        """Whether the extended member scores every item of the catalogue, known or new."""
        ctx = Context(None, Interactions.of([0, n_total - 1]), {})
        try:
            out = np.asarray(self.content.score(ctx, np.arange(n_total)), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a member this cannot extend: new items go last
            return False
        return out.shape == (n_total,) and not np.isnan(out).any()


class SourceUnsupported(ThawError):
    """A request's source history cannot be read: no source domain, or unknown source items."""


class InvalidValue(ThawError):
    """A well-formed value this model's data set cannot take (a rating off its scale, a word
    where it has a number); ``loc`` names the field as a 422 does."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        self.loc = list(loc)
        super().__init__(message)


class Service:
    """One saved model serving the users and items of one store."""

    def __init__(self, model_dir: str | Path, store: Store, *, cache_size: int = DEFAULT_CACHE,
                 metrics: Metrics | None = None) -> None:
        from thaw.persist import MODEL_FILE, load

        self.model_dir = Path(model_dir)
        self.store = store
        self.metrics = metrics or Metrics()
        self.model = load(self.model_dir)
        data = getattr(self.model, "dataset", None)
        if not isinstance(data, Dataset):
            raise ThawError(f"{model_dir} holds no data set to name items and users by; save it with `thaw fit`")
        self.data = data
        digest = hashlib.sha256((self.model_dir / MODEL_FILE).read_bytes()).hexdigest()
        self.version = f"{self.model.name}-{digest[:12]}"  # changes with every save
        self.default_rating = float(data.interactions.rating.mean()) if len(data.interactions) else 1.0
        self.lock = threading.RLock()  # the model and the catalogue: one request at a time
        self.cache = LRU(cache_size)
        self.item_ids: list[str] = [str(i) for i in data.item_ids]
        self.index: dict[str, int] = {i: k for k, i in enumerate(self.item_ids)}
        self.n_model_items = len(self.item_ids)
        self.catalogue_rev = -1
        self.content = self._content_member()
        self.extension = None if self.content is None else ContentExtension(self.content, data)
        self.training = self._training_histories(data)
        self.like_rate = _like_rate(data)
        self.pool_prior = np.zeros(0)  # the request being explored: like-probability per item
        self.policy = PriorThompson(lambda _ctx, cands: self.pool_prior[cands],
                                    segment=lambda ctx: segment_key(ctx.profile),
                                    strength=EXPLORE_PRIOR_STRENGTH, seed=0,
                                    propensity_draws=EXPLORE_PROPENSITY_DRAWS)
        self.policy_lock = threading.Lock()
        self.explore_slots, self.explore_pool = EXPLORE_SLOTS, EXPLORE_POOL

    # --- loading ----------------------------------------------------------------------------

    def _content_member(self) -> Recommender | None:
        from thaw.models.content import ContentKNN

        model = self.model
        if isinstance(model, ContentKNN):
            return model
        members = getattr(model, "members", {})
        member = members.get(getattr(model, "content", "content"))
        return member if isinstance(member, ContentKNN) else None

    @staticmethod
    def _training_histories(data: Dataset) -> dict[str, Interactions]:
        """Each training user's interactions, oldest first, by the user's raw id."""
        inter = data.interactions
        order = np.lexsort((np.arange(len(inter)), inter.ts, inter.user))
        users = inter.user[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.empty(0, int)
        ends = np.r_[starts[1:], len(users)]
        out = {}
        for s, e in zip(starts, ends, strict=True):
            rows = order[s:e]
            out[str(data.user_ids[users[s]])] = Interactions(
                np.full(len(rows), -1), inter.item[rows], inter.rating[rows], inter.ts[rows])
        return out

    def seed_store(self) -> tuple[int, int]:
        """Put the model's data set's users (profiles) and items (features) into the store,
        where missing."""
        data = self.data
        user_rows = [(str(u), _jsonable(data.profile(k))) for k, u in enumerate(data.user_ids)]
        features = data.item_features
        item_rows = []
        for k, i in enumerate(data.item_ids):
            row = {} if len(features.columns) == 0 else {
                c: v for c, v in features.iloc[k].items() if not _missing(v)}
            item_rows.append((str(i), _jsonable(row), ""))
        return self.store.seed(user_rows, item_rows)

    # --- the catalogue ----------------------------------------------------------------------

    def sync_catalogue(self, rev: int | None = None) -> None:
        """Take in the items created or changed since the last look (by any worker)."""
        rev = self.store.catalogue_rev() if rev is None else rev
        if rev == self.catalogue_rev:
            return
        with self.lock:
            if rev == self.catalogue_rev:
                return
            changed = self.store.items_changed_since(max(self.catalogue_rev, 0))
            new_rows = [r for r in changed if not (r["id"] in self.index and self.index[r["id"]] < self.n_model_items)]
            for row in new_rows:
                if row["id"] not in self.index:
                    self.index[row["id"]] = len(self.item_ids)
                    self.item_ids.append(row["id"])
            if self.extension is not None and new_rows:
                self.extension.update(new_rows, self.item_ids[self.n_model_items:])
                if not self.extension.check(len(self.item_ids)):
                    warnings.warn(f"the content member '{self.content.name}' cannot score items added after "
                                  "its fit; new items are listed after every known one", stacklevel=2)
                    self.extension = self.content = None
            self.catalogue_rev = max([rev, *(int(r["rev"]) for r in changed)])

    # --- answering --------------------------------------------------------------------------

    def _history(self, user: str | None, events: Sequence[Mapping[str, Any]]) -> tuple[Interactions, Interactions]:
        """The user's history as the model sees it (its own items only) and as the content
        member sees it (new items too): training interactions first, then stored events."""
        rows = [(self.index[e["item_id"]], self.default_rating if e.get("rating") is None else float(e["rating"]),
                 int(e["ts"])) for e in events if e["item_id"] in self.index]
        stored = (Interactions(np.full(len(rows), -1), *map(np.asarray, zip(*rows, strict=True)))
                  if rows else Interactions.empty())
        full = self.training[user].concat(stored) if user in self.training else stored
        return full.take(full.item < self.n_model_items), full

    def answer(self, user: str | None, profile: Mapping[str, Any], events: Sequence[Mapping[str, Any]],
               source: Interactions | None = None) -> Answer:
        """Score the whole catalogue for one user state (no cache); ``source`` is the user's
        history in the source domain of a model fitted on a cross-domain pair."""
        started = time.perf_counter()
        hist, full = self._history(user, events)
        ctx = Context(user=None, history=hist, profile=dict(profile), source=source)
        with self.lock:
            n_total = len(self.item_ids)
            known = np.arange(self.n_model_items)
            scores = np.asarray(self.model.score(ctx, known), dtype=np.float64)
            trips = getattr(self.model, "last_trips", None)
            tripped = bool(trips[0]) if trips else False
            if n_total > self.n_model_items:
                from thaw.stack.router import normalise

                scores = normalise(scores)
                extra = np.arange(self.n_model_items, n_total)
                if self.content is not None:
                    content = normalise(self.content.score(Context(None, full, dict(profile)), np.arange(n_total)))
                    scores = np.concatenate([scores, content[extra]])
                else:  # nothing can score a new item: after every known one
                    scores = np.concatenate([scores, np.full(len(extra), scores.min() - 1.0)])
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        if tripped:
            self.metrics.count("thaw_breaker_trips_total")
        self.metrics.observe("thaw_model_seconds", time.perf_counter() - started)
        return Answer(scores, np.unique(full.item), self.route(ctx, tripped), len(hist), n_total)

    def route(self, ctx: Context, tripped: bool) -> dict[str, Any]:
        """The route the model took for this request (its history, and any source history)."""
        from thaw.stack import Stack
        from thaw.stack.router import FALLBACK

        model = self.model
        if not isinstance(model, Stack) or not model.tables:
            return {"band": None, "kind": "model", "members": [model.name], "weights": [1.0],
                    "breaker_tripped": False}
        task = "next-item" if "next-item" in model.tables else next(iter(model.tables))
        row = model.answered_by(task, ctx)
        if tripped:
            return {"band": row["band"], "kind": "fallback", "members": [FALLBACK],
                    "weights": [1.0], "breaker_tripped": True}
        return {"band": row["band"], "kind": "member" if len(row["members"]) == 1 else "blend",
                "members": list(row["members"]), "weights": [float(w) for w in row["weights"]],
                "breaker_tripped": False}

    def recommend(self, user: str, n: int, exclude_seen: bool = True, explore: bool = False) -> Served:
        """Top ``n`` for a stored user (or a user nobody has seen: K = 0, no profile); the
        answer comes from the cache when nothing it depends on has changed. With ``explore``
        the first slots are the exploration policy's (``explore_slots``)."""
        row, events, rev = self.store.snapshot(user)
        self.sync_catalogue(rev)
        stamp = (None if row is None else row["rev"], max((e["seq"] for e in events), default=0),
                 self.catalogue_rev, self.version)
        hit = self.cache.get(user)
        cached = hit is not None and hit[0] == stamp
        if cached:
            answer = hit[1]
            self.metrics.count("thaw_cache_hits_total")
        else:
            answer = self.answer(user, {} if row is None else row["profile"], events)
            self.cache.put(user, (stamp, answer))
            self.metrics.count("thaw_cache_misses_total")
        if explore:
            return self.explore(user, answer, n, exclude_seen, cached)
        return Served(self.top(answer, n, exclude_seen), answer, cached)

    def recommend_anonymous(self, profile: Mapping[str, Any], history: Sequence[Mapping[str, Any]], n: int,
                            exclude_seen: bool = True, source: Sequence[Mapping[str, Any]] = ()) -> Served:
        """Top ``n`` for a profile and history given inline; nothing is stored or cached.
        ``source``: the user's history in the model's source domain (cross-domain transfer)."""
        self.sync_catalogue()
        profile = self.check_profile(profile, ["body", "profile"])
        self.check_ratings(history, ["body", "history"])
        unknown = [h["item"] for h in history if h["item"] not in self.index]
        if unknown:
            raise UnknownItems(list(dict.fromkeys(unknown)))
        events = [{"item_id": h["item"], "rating": h.get("rating"), "ts": h.get("ts") or k}
                  for k, h in enumerate(history)]
        answer = self.answer(None, profile, events, self._source(source) if source else None)
        return Served(self.top(answer, n, exclude_seen), answer, False)

    def _source(self, source: Sequence[Mapping[str, Any]]) -> Interactions:
        """A source-domain history named as the source domain names its items."""
        domain = self.data.source_domain
        if domain is None:
            raise SourceUnsupported("this model was not fitted on a cross-domain pair, so it has no "
                                    "source domain to read 'source' in (fit one with `thaw fit "
                                    "--dataset ml-1m:drama-comedy`)")
        try:
            items = domain.item_index([h["item"] for h in source])
        except DataError as exc:
            raise SourceUnsupported(f"source: {exc}") from None
        self.check_ratings(source, ["body", "source"], domain.rating_scale)
        default = float(domain.interactions.rating.mean()) if len(domain.interactions) else 1.0
        return Interactions.of(items,
                               [default if h.get("rating") is None else h["rating"] for h in source],
                               [h.get("ts") or k for k, h in enumerate(source)])

    # --- exploration ------------------------------------------------------------------------

    def explore(self, user: str, answer: Answer, n: int, exclude_seen: bool, cached: bool) -> Served:
        """The stack's slate with its first ``explore_slots`` chosen by the bandit policy among
        the stack's top ``explore_pool`` candidates; each explored slot is logged with the
        candidates it was chosen among and its propensity, before the answer goes out."""
        pool = [self.index[i] for i, _ in self.top(answer, max(n, self.explore_pool), exclude_seen)]
        slots = min(self.explore_slots, n, len(pool))
        ctx = self._segment_context(user)
        with self.policy_lock:
            self.pool_prior = np.full(len(self.item_ids), self.like_rate)
            self.pool_prior[pool] = score_prior(answer.scores[pool], self.like_rate)
            decision = self.policy.decide(ctx, np.asarray(pool, dtype=np.int64), slots)
        picked = [int(i) for i in decision.items]
        logged, remaining = [], list(pool)
        for item, p in zip(picked, decision.propensities, strict=True):
            logged.append((self.item_ids[item], float(p), [self.item_ids[i] for i in remaining]))
            remaining.remove(item)
        slate_id = uuid.uuid4().hex
        self.store.add_exposures(slate_id, user, getattr(self.policy, "label", self.policy.name), logged)
        rest = [i for i in self.top(answer, n + slots, exclude_seen) if self.index[i[0]] not in picked]
        items = [(self.item_ids[i], float(answer.scores[i])) for i in picked] + rest
        self.metrics.count("thaw_explored_slates_total")
        return Served(items[:n], answer, cached, slate_id, {item: p for item, p, _ in logged})

    def _segment_context(self, user: str) -> Context:
        """What the exploration policy knows of a user: their profile (evidence is counted per
        gender x age band, so each kind of user moves off the prior on its own)."""
        row = self.store.user(user)
        return Context(None, profile={} if row is None else row["profile"])

    def feedback(self, slate_id: str, item: str, reward: float) -> bool:
        """The reward of an explored slot; the policy learns it once. False when already given."""
        shown = self.store.add_feedback(slate_id, item, reward)
        if shown is None:
            return False
        self.sync_catalogue()
        with self.policy_lock:
            self.policy.update(self._segment_context(shown["user_id"]), self.index[item], reward)
        self.metrics.count("thaw_feedback_total")
        return True

    def restore_policy(self) -> int:
        """Teach a fresh policy every reward stored so far (a restart keeps what it learned)."""
        self.sync_catalogue()
        rows = self.store.all_feedback()
        with self.policy_lock:
            for r in rows:
                if r["item_id"] in self.index:
                    self.policy.update(self._segment_context(r["user_id"]), self.index[r["item_id"]],
                                       r["reward"])
        return len(rows)

    def top(self, answer: Answer, n: int, exclude_seen: bool) -> list[tuple[str, float]]:
        """The ``n`` best items, best first; ties go to the item listed first in the catalogue."""
        scores = answer.scores
        candidates = np.arange(len(scores))
        if exclude_seen and len(answer.seen):
            candidates = np.setdiff1d(candidates, answer.seen, assume_unique=True)
        order = candidates[np.lexsort((candidates, -scores[candidates]))[:n]]
        return [(self.item_ids[i], float(scores[i])) for i in order]

    # --- writes -----------------------------------------------------------------------------

    def check_ratings(self, rows: Sequence[Mapping[str, Any]], loc: Sequence[str],
                      scale: tuple[float, float] | None = None) -> None:
        """Every row's rating (None: not given) is a number on the data set's rating scale
        (``scale``: another domain's); else an InvalidValue naming the row."""
        low, high = self.data.rating_scale if scale is None else scale
        for k, row in enumerate(rows):
            rating = row.get("rating")
            if rating is not None and not (np.isfinite(rating) and low <= rating <= high):
                raise InvalidValue([*loc, k, "rating"], f"rating {rating:g} is outside the rating scale "
                                                        f"of the model's data set, {low:g} to {high:g}")

    def check_profile(self, profile: Mapping[str, Any], loc: Sequence[str]) -> dict[str, Any]:
        """``profile`` with each field the data set holds as a number read as one (a numeric
        string too); a value that is not a finite number there is an InvalidValue."""
        features = self.data.user_features
        out = dict(profile)
        for key, value in profile.items():
            if value is None or key not in features or not pd.api.types.is_numeric_dtype(features[key]):
                continue
            try:
                number = float(value) if not isinstance(value, bool) else float("nan")
            except (TypeError, ValueError):
                number = float("nan")
            if not np.isfinite(number):
                raise InvalidValue([*loc, key], f"{key} is a number in the model's data set, got {value!r}")
            out[key] = value if isinstance(value, int | float) else number
        return out

    def add_events(self, batch: Sequence[Mapping[str, Any]], create_items: bool = False) -> EventsWritten:
        self.check_ratings(batch, ["body", "events"])
        written = self.store.add_events(batch, create_items=create_items)
        for user in {e["user"] for e in batch}:
            self.cache.pop(user)
        self.metrics.count("thaw_events_stored_total", len(written.stored))
        self.metrics.count("thaw_events_duplicate_total", len(written.duplicates))
        return written

    def put_item(self, item: str, features: Mapping[str, Any], text: str) -> bool:
        created = self.store.put_item(item, features, text)
        self.sync_catalogue()
        return created

    def put_user(self, user: str, profile: Mapping[str, Any]) -> bool:
        created = self.store.put_user(user, self.check_profile(profile, ["body", "profile"]))
        self.cache.pop(user)
        return created


class Live:
    """The service that requests use now; ``reload`` swaps in a new model between requests
    (a request holds the service it started with, so none in flight is dropped)."""

    def __init__(self, service: Service) -> None:
        self.current = service
        self.lock = threading.Lock()

    def reload(self, model_dir: str | Path | None = None) -> Service:
        with self.lock:  # one reload at a time; requests go on meanwhile
            old = self.current
            new = Service(old.model_dir if model_dir is None else model_dir, old.store,
                          cache_size=old.cache.size, metrics=old.metrics)
            old.sync_catalogue()
            _check_same_catalogue(new, old)
            new.restore_policy()
            self.current = new
            old.metrics.count("thaw_reloads_total")
            return new


def _check_same_catalogue(new: Service, old: Service) -> None:
    """A model reloaded over a store names the store's items: every item it was fitted on is in
    the store, and it knows every item the model it replaces was fitted on (a refit on the
    store's events only adds items). A model fitted on another data set is a ThawError."""
    store_items, replaced = set(old.item_ids), old.item_ids[:old.n_model_items]
    foreign = [i for i in new.item_ids[:new.n_model_items] if i not in store_items]
    lost = [i for i in replaced if i not in new.index]
    for items, what in ((foreign, "of its items are not in the store"),
                        (lost, "items of the model it would replace are not among its items")):
        if items:
            raise ThawError(f"{new.model_dir} was fitted on another catalogue than the store's: {len(items)} "
                            f"{what} (e.g. {', '.join(items[:5])}); serve it with a store of its own (--db)")


def _missing(value: Any) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """Numpy scalars and tuples as plain JSON values."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, (tuple, np.ndarray)):
            v = [x.item() if isinstance(x, np.generic) else x for x in v]
        out[str(k)] = v
    return out


def _like_rate(data: Dataset) -> float:
    """The share of training interactions that are likes (the top quarter of the rating scale,
    4 and 5 on 1-5): what the exploration prior is centred on."""
    low, high = data.rating_scale
    ratings = data.interactions.rating
    if len(ratings) == 0 or high <= low:
        return 0.5
    return float(np.clip(np.mean(ratings >= low + 0.75 * (high - low)), 0.01, 0.99))


def score_prior(scores: np.ndarray, like_rate: float) -> np.ndarray:
    """Like-probabilities for a pool from the stack's scores: the like rate's log-odds shifted
    by each score's z-score within the pool (one standard deviation up: e times the odds). An
    assumption, not a calibration: it only has to order the arms as the stack does and stay
    soft enough that a few rewards can overturn it."""
    from thaw.stack.router import normalise  # the stack's own z-scores (-inf: below the rest)

    logit = np.log(like_rate / (1.0 - like_rate)) + normalise(scores)
    return 1.0 / (1.0 + np.exp(-logit))
