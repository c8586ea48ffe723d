"""The service without HTTP: a saved model, the store, the catalogue and a per-user cache.

A request becomes a ``Context`` built from the store (the user's profile, and their stored
events after any training interactions the model's data set has for them) and the model
answers it: the service has no model logic of its own. Every user is treated as the cold-start
evaluation treats a held-out user (``Context(user=None)`` with their history), so a user's
next event moves them along the stack's bands on their very next request.

Items the model was not fitted with (a ``PUT /v1/items`` after the fit) are scored by the
stack's content member, which is given them on arrival (``ContentKNN.extend_items``); the
other members abstain on them, so each new item is put where the content member ranks it
among the catalogue, at the stack's score for that place (``on_the_stacks_scale``). Answers
are cached per user in a bounded LRU, stamped with everything they depend on (the user's
profile revision and last event, the catalogue revision), so an event posted through any
worker invalidates them. A user with no events and no training history (K = 0) is answered
from their profile alone, so those answers are also cached per profile (``cold_cache``), keyed
by the catalogue revision and the model version as well.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thaw.data.features import segment_key
from thaw.data.schema import Dataset, Interactions
from thaw.errors import DataError, ThawError
from thaw.models.base import Context, Recommender
from thaw.serve.exploration import PriorThompson
from thaw.serve.metrics import Metrics
from thaw.serve.store import EventsWritten, Store, UnknownItems, segment_of

DEFAULT_CACHE = 4096
DEFAULT_COLD_CACHE = 1024  # K = 0 answers, one per distinct profile (Service.cold_cache)
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


def item_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Items given as store rows (features: title, genres, year; free text) as the feature
    frame a model's ``extend_items`` takes."""
    return pd.DataFrame({
        "title": [str(r["features"].get("title") or "") for r in rows],
        "genres": [tuple(r["features"].get("genres") or ()) for r in rows],
        "year": [r["features"].get("year") for r in rows],
        "text": [r.get("text") or "" for r in rows],
    })


class ContentExtension:
    """Gives the content member the items added after its fit (``ContentKNN.extend_items``):
    new items are numbered on after the model's own, in the catalogue's order; a new item
    described again is re-described. ``check`` scores once to be sure it worked."""

    def __init__(self, content: Any, data: Dataset) -> None:
        self.content, self.data = content, data

    def update(self, rows: Sequence[Mapping[str, Any]], index: Mapping[str, int]) -> None:
        """Hand ``rows`` (new or changed new items) to the member, at their catalogue index."""
        if rows:
            self.content.extend_items(item_frame(rows), [index[r["id"]] for r in rows], data=self.data)

    def check(self, n_total: int) -> bool:
        """Whether the extended member scores every item of the catalogue, known or new."""
        ctx = Context(None, Interactions.of([0, n_total - 1]), {})
        try:
            out = np.asarray(self.content.score(ctx, np.arange(n_total)), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a member this cannot extend: new items go last
            return False
        return out.shape == (n_total,) and not np.isnan(out).any()


def on_the_stacks_scale(content: np.ndarray, stack: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Scores for the items after the stack's (``content[len(stack):]``, the new items), on
    the stack's scale: each takes the stack's score at the quantile its content score reaches
    among the content scores of the catalogue items the user has not seen (ties count half).

    Why by rank: the content member is the only one that scores both kinds of item, so where
    it ranks a new item among the catalogue is all there is to go on, and only that rank
    carries over: the stack's scores and the content member's are spread differently (a
    z-score of one is not a z-score of the other; set among the stack's, a new item's
    content z-score moved with the stack's spread). Seen items are left out on both sides:
    they are not candidates, and content puts them first (they are the support). So a new
    item is first only when it beats every unseen catalogue item on content (and then ties
    with the stack's best, listed first), last only when it loses to all; where the stack is
    the content member, this is its own ranking."""
    content = np.asarray(content, dtype=np.float64)
    stack = np.asarray(stack, dtype=np.float64)
    n = len(stack)
    new = content[n:]
    reference = np.setdiff1d(np.flatnonzero(np.isfinite(stack)), seen)
    if len(reference) == 0:  # every rankable item seen: rank against them all
        reference = np.flatnonzero(np.isfinite(stack))
    if len(reference) == 0:
        return np.zeros(len(new))  # nothing of the stack's to rank against; content orders them
    ours = np.sort(content[reference])
    quantile = (np.searchsorted(ours, new, "left") + np.searchsorted(ours, new, "right")) / (2 * len(ours))
    return np.quantile(stack[reference], quantile)


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
                 cold_cache_size: int = DEFAULT_COLD_CACHE, metrics: Metrics | None = None,
                 warm: bool = True) -> None:
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
        self.cold_cache = LRU(cold_cache_size)
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
        self.evidence_rev = 0  # the store's evidence revision the policy holds
        self.model_rev = 0  # the store's model revision this service is (or follows)
        self.follow: Any = None  # called with a newer model revision (Live: reload aside)
        if warm:
            self.warm_up()

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

    def warm_up(self) -> None:
        """Score a K = 0 and a K = 1 request once, answering nobody, so that what the model
        builds on first use (LightGBM's booster, a float64 copy of a network, torch's first
        calls: 1.7 s for the ML-100k stack) is not paid by the first user after a start or a
        reload. Paid there, it also ran past a member's time budget on a busy machine, and the
        breaker sent that first request to the fallback."""
        known = np.arange(self.n_model_items)
        first = Interactions(np.full(1, -1), np.zeros(1, dtype=np.int64), np.ones(1), np.zeros(1, dtype=np.int64))
        with self.lock:
            for history in (Interactions.empty(), first)[:1 + (self.n_model_items > 0)]:
                self.model.score(Context(user=None, history=history, profile={}), known)

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
                try:
                    self.extension.update(new_rows, self.index)
                    extended = self.extension.check(len(self.item_ids))
                except ThawError:
                    extended = False
                if not extended:
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
                if self.content is not None:
                    content = self.content.score(Context(None, full, dict(profile)), np.arange(n_total))
                    scores = np.concatenate([scores, on_the_stacks_scale(content, scores, np.unique(full.item))])
                else:  # nothing can score a new item: after every known one
                    finite = scores[np.isfinite(scores)]
                    floor = finite.min() - 1.0 if len(finite) else -np.inf
                    scores = np.concatenate([scores, np.full(n_total - self.n_model_items, floor)])
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
        row, events, revs = self.store.snapshot(user)
        self.sync_catalogue(revs["catalogue"])
        if revs.get("model", 0) > self.model_rev and self.follow is not None:
            self.follow(revs["model"])  # another replica published a model: load it aside
        if explore:
            self.sync_evidence(revs.get("evidence"))
        stamp = (None if row is None else row["rev"], max((e["seq"] for e in events), default=0),
                 self.catalogue_rev, self.version)
        hit = self.cache.get(user)
        cached = hit is not None and hit[0] == stamp
        if cached:
            answer = hit[1]
            self.metrics.count("thaw_cache_hits_total")
        else:
            answer, cached = self.answer_cold_cached(user, {} if row is None else row["profile"], events)
            self.cache.put(user, (stamp, answer))
            self.metrics.count("thaw_cache_hits_total" if cached else "thaw_cache_misses_total")
        if explore:
            return self.explore(user, answer, n, exclude_seen, cached)
        return Served(self.top(answer, n, exclude_seen), answer, cached)

    def answer_cold_cached(self, user: str | None, profile: Mapping[str, Any],
                           events: Sequence[Mapping[str, Any]]) -> tuple[Answer, bool]:
        """``answer``, and whether it came from the K = 0 cache: a user with no events and no
        training history is answered from their profile alone, the same for every such user,
        so the answer is kept per profile, catalogue revision and model version. An answer
        the breaker sent to the fallback is not kept (a member that ran past its budget once
        should not decide a profile's answers until the catalogue moves on)."""
        if events or user in self.training:
            return self.answer(user, profile, events), False
        key = (json.dumps(profile, sort_keys=True, default=str), self.catalogue_rev, self.version)
        found = self.cold_cache.get(key)
        if found is not None:
            return found, True
        answer = self.answer(user, profile, events)
        if not answer.route["breaker_tripped"]:
            self.cold_cache.put(key, answer)
        return answer, False

    def recommend_anonymous(self, profile: Mapping[str, Any], history: Sequence[Mapping[str, Any]], n: int,
                            exclude_seen: bool = True, source: Sequence[Mapping[str, Any]] = ()) -> Served:
        """Top ``n`` for a profile and history given inline; nothing is stored, and only a K = 0
        answer is cached (per profile, ``answer_cold_cached``). ``source``: the user's history
        in the model's source domain (cross-domain transfer)."""
        self.sync_catalogue()
        profile = self.check_profile(profile, ["body", "profile"])
        self.check_ratings(history, ["body", "history"])
        unknown = [h["item"] for h in history if h["item"] not in self.index]
        if unknown:
            raise UnknownItems(list(dict.fromkeys(unknown)))
        events = [{"item_id": h["item"], "rating": h.get("rating"), "ts": h.get("ts") or k}
                  for k, h in enumerate(history)]
        if source:
            answer, cached = self.answer(None, profile, events, self._source(source)), False
        else:
            answer, cached = self.answer_cold_cached(None, profile, events)
        return Served(self.top(answer, n, exclude_seen), answer, cached)

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
        """The reward of an explored slot, added once to its arm's evidence in the store (which
        every replica reads); False when already given."""
        shown = self.store.add_feedback(slate_id, item, reward, segment=segment_key)
        if shown is None:
            return False
        self.sync_evidence()
        self.metrics.count("thaw_feedback_total")
        return True

    def sync_evidence(self, rev: int | None = None) -> None:
        """Take in the exploration evidence changed since the last look (any replica's
        rewards, summed by the store)."""
        if rev is not None and rev == self.evidence_rev:
            return
        with self.policy_lock:
            rows = self.store.evidence_since(self.evidence_rev)
            if rows and any(r["item_id"] not in self.index for r in rows):
                self.sync_catalogue()
            for r in rows:
                if r["item_id"] in self.index:
                    self.policy.set_evidence(segment_of(r["segment"]), self.index[r["item_id"]],
                                             r["trials"], r["successes"])
                self.evidence_rev = max(self.evidence_rev, int(r["rev"]))

    def restore_policy(self) -> int:
        """Give a fresh policy the evidence stored so far (a restart keeps what it learned);
        returns the rewards it now counts."""
        self.sync_evidence()
        return self.policy.n_updates

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
        """Store the item; the next recommendation (of any worker or replica) takes it into
        the catalogue, as it does an item another worker stored. Not here: that takes the
        model's lock, so under load a PUT queued behind every waiting recommendation (0.8 s
        at the median with 32 clients) for a 10 ms write."""
        return self.store.put_item(item, features, text)

    def put_user(self, user: str, profile: Mapping[str, Any]) -> bool:
        created = self.store.put_user(user, self.check_profile(profile, ["body", "profile"]))
        self.cache.pop(user)
        return created


class Live:
    """The service that requests use now; ``reload`` swaps in a new model between requests
    (a request holds the service it started with, so none in flight is dropped).

    Replicas (worker processes, machines) share the model through the store: a reload
    publishes the model folder and version there, and every other replica, seeing the model
    revision move on in a request's snapshot, loads that folder aside and swaps it in
    (``follow``); the folder must be readable at the same path on every machine."""

    def __init__(self, service: Service) -> None:
        self.current = service
        self.lock = threading.Lock()
        self.following = threading.Lock()
        service.follow = self.follow

    def reload(self, model_dir: str | Path | None = None, published: int | None = None) -> Service:
        """Serve ``model_dir`` (default: the folder served, re-read) from the next request on,
        and publish it for the other replicas; ``published``: the model revision another
        replica published it as (nothing to publish)."""
        with self.lock:  # one reload at a time; requests go on meanwhile
            old = self.current
            new = Service(old.model_dir if model_dir is None else model_dir, old.store,
                          cache_size=old.cache.size, cold_cache_size=old.cold_cache.size, metrics=old.metrics)
            old.sync_catalogue()
            _check_same_catalogue(new, old)
            new.restore_policy()
            new.model_rev = (old.store.publish_model(str(new.model_dir.resolve()), new.version)
                             if published is None else published)
            new.follow = self.follow
            self.current = new
            old.metrics.count("thaw_reloads_total")
            return new

    def follow(self, rev: int) -> None:
        """Load the model another replica published (``rev``) in a thread of its own; the
        requests meanwhile are answered by the model they found."""
        if not self.following.acquire(blocking=False):
            return  # already loading one

        def load() -> None:
            try:
                self.adopt()
            finally:
                self.following.release()
        threading.Thread(target=load, daemon=True).start()

    def adopt(self) -> Service:
        """Serve the newest published model, unless it is the one served already; a folder
        that cannot be loaded here is warned about and skipped."""
        current = self.current
        published = current.store.published_model()
        if published is None or published["rev"] <= current.model_rev:
            return current
        if published["version"] == current.version:
            current.model_rev = published["rev"]
            return current
        try:
            return self.reload(published["model_dir"], published=published["rev"])
        except (ThawError, OSError) as exc:
            warnings.warn(f"the model another replica published ({published['model_dir']}) cannot be loaded "
                          f"here: {exc}; still serving {current.version}", stacklevel=2)
            current.model_rev = published["rev"]
            return current


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
    from thaw.models.base import normalise  # the stack's own z-scores (-inf: below the rest)

    logit = np.log(like_rate / (1.0 - like_rate)) + normalise(scores)
    return 1.0 / (1.0 + np.exp(-logit))
