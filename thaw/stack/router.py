"""The cold-to-warm stack: route each request by how much the user has done.

No single method wins along the interaction-count axis, so the stack learns, on validation
users only, what to do for each support-size band: one member, or a blend of up to three
members whose scores are z-normalised per request first. A popularity circuit breaker sends a
request to segment popularity when the routed member is unsure (a confidence threshold per
band, calibrated on validation users) or fails (raises, returns NaN or inf, runs past its time
budget). Items with few training interactions are blended with content scores, with a weight
per item band learned the same way. The stack knows its members only through the Recommender
contract; the table it learns is plain data, saved with it and printable.

By default the table is only the summary: the stack answers with a learner fitted on out-of-fold
episodes (thaw/stack/learned.py) that weighs every member per request and per item, and the
breaker trips when a member it reads fails. ``stack-table`` (StackTable) answers with the table.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Self

import numpy as np

from thaw.compute import one_thread
from thaw.data.schema import Dataset
from thaw.errors import ThawError
from thaw.models.base import (
    Context,
    EpisodeValidator,
    LearnsFromOutputs,
    MemberOutputs,
    OutOfFold,
    Recommender,
    Validator,
    normalise,
)
from thaw.stack import learned

USER_BANDS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 1), (2, 3), (4, 5), (6, 10),
                                                  (11, 20), (21, None))
ITEM_BANDS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 4), (5, None))
# Support sizes whose validation episodes teach the table: at least one per default band.
VALIDATION_KS = (0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 30)
FALLBACK = "segment-pop"
STACKERS = ("auto", "fwls", "lgbm", "table")
"""auto: FWLS or LightGBM, whichever validation users prefer; table: the band table answers."""
SOURCE_ROW = "0+src"  # the row for K = 0 requests with a history in a source domain
DEFAULT_MEMBERS = ("pop", "segment-pop", "content", "mf", "fomaml", "deepfm", "sasrec")
# The overview's routing rule, used for a band without enough validation users: from the
# row's lowest support size on, the first of these members that the stack has.
DEFAULT_TABLE = (
    (0, ("ptupcdr", "emcdr", "segment-pop", "pop", "content")),
    (1, ("ptupcdr", "emcdr", "content", "segment-pop", "pop")),
    (3, ("melu", "fomaml", "maml", "hml", "metatl", "content")),
    (20, ("mf", "sasrec", "bpr", "gru4rec", "melu")),
)
ITEM_WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)

_POOL: ThreadPoolExecutor | None = None


def band_of(n: int, bands: Sequence[Sequence[int | None]]) -> int:
    """Index of the band holding ``n`` (bands are inclusive ranges; None = no upper end)."""
    for i, (low, high) in enumerate(bands):
        if n >= low and (high is None or n <= high):
            return i
    raise ThawError(f"no band holds {n}; bands must cover every count from 0 up")


def band_label(band: Sequence[int | None]) -> str:
    low, high = band
    return f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")


def episode_value(outputs: np.ndarray, truth: np.ndarray | None, task: str) -> np.ndarray:
    """The validation metric of each row of ``outputs`` (rows = alternative score vectors for
    one episode): NDCG@10 of the target in column 0 (next-item; ties count against), or
    minus the MAE of the predicted ratings (rating; the rating tables' headline)."""
    outputs = np.atleast_2d(outputs)
    if task == "next-item":
        rank = 1 + np.count_nonzero(~(outputs[:, 1:] < outputs[:, :1]), axis=1)
        return np.where(rank <= 10, 1.0 / np.log2(rank + 1), 0.0)
    err = np.abs(outputs - truth)
    err[np.isnan(err)] = np.inf
    return -err.mean(axis=1)


def simplex(n_members: int, step: float) -> np.ndarray:
    """Every weight vector of ``n_members`` positive multiples of ``step`` summing to one."""
    units = int(round(1 / step))
    rows = [c for c in itertools.product(range(1, units), repeat=n_members) if sum(c) == units]
    return np.asarray(rows, dtype=np.float64) / units


class Stack(Recommender, LearnsFromOutputs):
    """A Recommender made of others, routed by support size, with a popularity circuit breaker.

    ``members`` are names (made with ``seed`` and fitted by the stack) or Recommender
    instances; pass ``fitted=True`` when the instances are already fitted. The fallback
    (segment popularity) is added when absent: the breaker needs it. ``content`` names the
    member that scores items with few training interactions (item bands). ``stacker``, ``folds``,
    ``max_learned`` and ``drop_below`` shape the learned stacker (see ``fit`` and
    ``_drop_members``; 0 keeps every member it reads); ``jobs`` worker processes run
    its out-of-fold fits in ``fit`` (an evaluation uses its own).
    """

    name = "stack"
    predicts_ratings = True
    scores_new_items = True  # its item bands blend in the content member
    _transient = ("last_trips", "_models")

    def __init__(self, members: Sequence[str | Recommender] | Mapping[str, Recommender] = DEFAULT_MEMBERS,
                 *, fitted: bool = False, bands: Sequence[Sequence[int | None]] = USER_BANDS,
                 item_bands: Sequence[Sequence[int | None]] = ITEM_BANDS, max_blend: int = 3,
                 blend_step: float = 0.1, min_users: int = 10, time_budget: float | None = 2.0,
                 validation_ks: Sequence[int] = VALIDATION_KS, content: str = "content",
                 stacker: str = "auto", folds: int = 5, max_learned: int = 6, drop_below: float = 0.05,
                 jobs: int = 1, seed: int = 0) -> None:
        # Imported here, not at the top: the registry imports this module.
        from thaw.registry import make_model

        if isinstance(members, Mapping):
            self.members = dict(members)
        else:
            self.members = {}
            for m in members:
                model = make_model(m, seed=seed) if isinstance(m, str) else m
                self.members[model.name] = model
        if FALLBACK not in self.members:
            self.members[FALLBACK] = make_model(FALLBACK, seed=seed)
        if "stack" in self.members:
            raise ThawError("a stack cannot be its own member")
        self.fitted_members = fitted
        self.bands = [list(b) for b in bands]
        self.item_bands = [list(b) for b in item_bands]
        band_of(0, self.bands)
        band_of(0, self.item_bands)
        self.max_blend, self.blend_step, self.min_users = max_blend, blend_step, min_users
        self.time_budget = time_budget
        self.validation_ks = list(validation_ks)
        self.content = content
        if stacker not in STACKERS:
            raise ThawError(f"unknown stacker '{stacker}'; choose one of {', '.join(STACKERS)}")
        if folds < 2:
            raise ThawError(f"the stack's out-of-fold episodes need at least 2 folds, not {folds}")
        if max_learned < 1:
            raise ThawError(f"max_learned must be at least 1, not {max_learned}")
        if jobs < 1:
            raise ThawError(f"jobs must be at least 1, not {jobs}")
        if not 0.0 <= drop_below < 1.0:
            raise ThawError(f"drop_below is a share of the effective weight, in [0, 1), not {drop_below}")
        self.stacker, self.folds, self.max_learned, self.jobs = stacker, folds, max_learned, jobs
        self.drop_below = drop_below
        self.seed = seed
        self.task = "next-item"
        self.learned: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.item_weights: dict[str, list[float]] = {}
        self.item_counts = np.zeros(0, dtype=np.int64)
        self.last_trips: list[bool] = []

    def set_task(self, protocol: str) -> None:
        self.task = protocol

    # --- learning -------------------------------------------------------------------------

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        """Fit the members (unless handed fitted), learn the table on validation users, then
        (unless ``stacker='table'``) refit the chosen members on folds of ``data`` and learn the
        stacker from their out-of-fold episodes. Members handed fitted are copied and refitted
        for the folds, so their ``fit`` must start afresh. A validator that hands out no episodes
        (not an EpisodeValidator) leaves the default routes."""
        specs = {name: copy.deepcopy(member) for name, member in self.members.items()}
        if not self.fitted_members:
            for member in self.members.values():
                member.set_task(self.task)
                member.fit(data, validate=validate)
        if not isinstance(validate, EpisodeValidator):
            return self.learn_from_outputs(data, MemberOutputs.of(self.members, [], self.task))
        outputs = MemberOutputs.of(self.members, validate.episodes_at(self.validation_ks), self.task)
        return self.learn_from_outputs(data, outputs, self.out_of_fold(data, validate, outputs, specs, jobs=self.jobs))

    def member_names(self) -> list[str]:
        return list(self.members)

    def out_of_fold(self, data: Dataset, validate: EpisodeValidator, outputs: MemberOutputs,
                    unfitted: Mapping[str, Recommender], *, jobs: int = 1,
                    progress: bool = False) -> OutOfFold | None:
        """The learned stacker's out-of-fold episodes: the members it reads (``choose_learned``,
        from their validation outputs) refitted on ``folds`` folds of the training users.
        None for the table alone (``stacker='table'``) or without validation episodes."""
        if self.stacker == "table" or not outputs.episodes:
            return None
        chosen = self.choose_learned(outputs.episodes, outputs.outputs)
        return validate.out_of_fold({m: unfitted[m] for m in chosen}, data, self.task, self.folds,
                                    self.validation_ks, self.seed, jobs=jobs, progress=progress,
                                    epochs=outputs.epochs)

    def alternatives(self, task: str) -> list[str]:
        """The learner validation did not choose (both are fitted): an evaluation reports it
        beside the chosen one."""
        state = self.learned.get(task, {})
        return [kind for kind in state.get("validation", {}) if kind != state.get("kind")]

    @contextlib.contextmanager
    def answering_with(self, task: str, kind: str) -> Iterator[None]:
        """Answer ``task`` with the learner ``kind`` inside the block (see ``alternatives``)."""
        state = self.learned[task]
        chosen, state["kind"], self._models = state["kind"], kind, None
        try:
            yield
        finally:
            state["kind"], self._models = chosen, None

    def choose_learned(self, episodes: Sequence[Any], outputs: Mapping[str, Sequence[np.ndarray]]) -> list[str]:
        """The members the learned stacker reads: the ``max_learned`` best by mean validation
        metric, plus the fallback and the content member (cheap, and what new items need)."""
        task = self.task
        eligible = [m for m in self.members if m in outputs and self._answers(m, task)]
        value = {m: float(np.mean([episode_value(self._transform(o, task), e.truth, task)[0]
                                   for o, e in zip(outputs[m], episodes, strict=True)]))
                 for m in eligible}
        best = sorted(eligible, key=lambda m: -value[m])[:self.max_learned]
        extra = [m for m in (FALLBACK, self.content) if m in eligible]
        return list(dict.fromkeys([*best, *extra]))

    def learn_from_outputs(self, data: Dataset, outputs: MemberOutputs, oof: OutOfFold | None = None) -> Self:
        """Learn the routing table from the members' outputs on validation episodes, and the
        stacker from ``oof`` (out-of-fold episodes, their members' outputs and confidences).

        Used by ``fit`` and by the evaluation, which hands over the outputs of members it has
        fitted already (so no member is fitted twice). Never sees a test user.
        """
        task = self.task
        episodes, confidences, outputs = outputs.episodes, outputs.confidences, outputs.outputs
        self.item_counts = np.bincount(data.interactions.item, minlength=data.n_items)
        eligible = [m for m in self.members if m in outputs and self._answers(m, task)]
        if FALLBACK not in eligible:
            raise ThawError(f"the stack's fallback '{FALLBACK}' has no outputs to learn from")
        # Requests at K = 0 that carry a source-domain history (cross-domain splits) get a row
        # of their own, so transfer is routed to exactly where it can help.
        rows = self.bands + ([[0, 0]] if any(_transferable(e.context) for e in episodes) else [])
        in_band = np.array([self._row_of(e.context, len(rows)) for e in episodes], dtype=int)
        transformed = {m: [self._transform(o, task) for o in outputs[m]] for m in eligible}
        table = []
        for b, band in enumerate(rows):
            idx = np.flatnonzero(in_band == b)
            users = len({episodes[i].user for i in idx})
            if users < self.min_users:
                route = self._default_route(band, eligible)
            else:
                route = self._best_route(idx, episodes, transformed, confidences, eligible, task)
            label = SOURCE_ROW if b == len(self.bands) else band_label(band)
            route |= {"band": label, "users": users}
            table.append(route)
        self.tables[task] = table
        self.learned.pop(task, None)
        self._models = None
        if oof is not None and self.stacker != "table" and episodes:
            with one_thread():  # seeded LightGBM and the BLAS, on one thread: the same numbers every time
                self.learned[task] = self._learn_stacker(episodes, outputs, confidences, oof)
        self.item_weights[task] = [0.0] * len(self.item_bands)
        if self.content in eligible and episodes:
            self.item_weights[task] = self._learn_item_weights(episodes, transformed, outputs, confidences,
                                                               task)
        return self

    def _learn_stacker(self, episodes: Sequence[Any], outputs: Mapping[str, Sequence[np.ndarray]],
                       confidences: Mapping[str, np.ndarray], oof: OutOfFold) -> dict[str, Any]:
        """FWLS (its ridge weight chosen on validation users) and LightGBM (its rounds stopped
        on them) fitted on the out-of-fold episodes; the one validation prefers is kept, after
        the members that add nothing to it are dropped (``_drop_members``)."""
        task = self.task
        members = [m for m in oof.outputs if m in outputs]
        features = learned.Features(members, task, self.item_counts, [e.context.profile for e in oof.episodes])
        train = learned.Table(features, oof.episodes, oof.outputs, oof.confidences, oof.item_counts or None)
        valid = learned.Table(features, episodes, outputs, confidences)
        kinds = [k for k in learned.LEARNERS if self.stacker in ("auto", k)]
        fitted = self._fit_learners(kinds, train, valid, features, episodes)
        kind = max(fitted, key=lambda k: fitted[k][1].mean())
        with_all = {k: float(v.mean()) for k, (_, v) in fitted.items()}
        basis = self._weight_basis(kind, fitted[kind][0], valid)  # the weights it is explained by
        dropped, refit = self._drop_members(kind, fitted[kind], basis, train, valid, features, episodes)
        if dropped:
            kept = features.without(dropped)
            train, valid = train.narrowed(features, kept), valid.narrowed(features, kept)
            features = kept
            others = [k for k in kinds if k != kind]
            fitted = {kind: refit, **self._fit_learners(others, train, valid, features, episodes)}
            kind = max(fitted, key=lambda k: fitted[k][1].mean())
            basis = self._weight_basis(kind, fitted[kind][0], valid)
        state = {"kind": kind, "members": features.members, "features": dict(vars(features)),
                 "fwls": fitted["fwls"][0] if "fwls" in fitted else None,
                 "booster": fitted["lgbm"][0] if "lgbm" in fitted else None,
                 "validation": {k: float(v.mean()) for k, (_, v) in fitted.items()},
                 "dropped": dropped, "validation_with_all": with_all,
                 "oof_episodes": len(oof.episodes), "oof_users": len({e.user for e in oof.episodes}),
                 "folds": self.folds, "fold_by": getattr(oof, "by", "users")}
        self.learned[task] = state
        self._models = None
        state["summary"] = self._summarise(task, episodes, valid, features, basis)
        return state

    def _fit_learners(self, kinds: Sequence[str], train: Any, valid: Any, features: Any,
                      episodes: Sequence[Any]) -> dict[str, tuple[Any, np.ndarray]]:
        """Each learner of ``kinds`` fitted on ``train``: its fitted state (FWLS's weights, or
        LightGBM's model text) and its value on every validation episode."""
        task, out = self.task, {}
        if "fwls" in kinds:
            for penalty in learned.PENALTIES:
                params = learned.fwls_fit(train, task, penalty)
                values = self._validation_values(valid, episodes, task, "fwls", params, None)
                if "fwls" not in out or values.mean() > out["fwls"][1].mean():
                    out["fwls"] = (params | {"penalty": np.array([penalty])}, values)
        if "lgbm" in kinds:
            booster = learned.lgbm_fit(train, valid, features, task, self.seed)
            out["lgbm"] = (booster, self._validation_values(valid, episodes, task, "lgbm", None,
                                                            learned.lgbm_booster(booster)))
        return out

    def _drop_members(self, kind: str, fitted: tuple[Any, np.ndarray], basis: Any, train: Any, valid: Any,
                      features: Any, episodes: Sequence[Any]) -> tuple[list[str], Any]:
        """The members the learner ``kind`` can do without, and its refit without them.

        Every member costs each request its call (issue 24: one fomaml call was 17 ms of a
        50 ms answer), so those whose effective weight on validation users is below
        ``drop_below`` are tried: all at once first, then one at a time, lightest first. A
        drop is kept when validation users lose at most one standard error of the paired
        per-episode difference from the learner with every member (the table's rule), so what
        is dropped added nothing that validation can see. The fallback always stays."""
        if not getattr(self, "drop_below", 0.0):
            return [], None
        weights = self._effective_weights(kind, basis, valid, features, np.ones(len(valid.x), dtype=bool))
        if kind == "fwls":  # mean weights, on the members' scales: their shares of the total
            total = sum(abs(w) for w in weights.values()) or 1.0
            weights = {m: abs(w) / total for m, w in weights.items()}
        light = sorted((m for m in features.members if m != FALLBACK and abs(weights[m]) < self.drop_below),
                       key=lambda m: (abs(weights[m]), m))
        if not light or len(light) == len(features.members):
            return [], None

        def refit(dropped: list[str]) -> tuple[Any, np.ndarray] | None:
            kept = features.without(dropped)
            found = self._fit_learners([kind], train.narrowed(features, kept), valid.narrowed(features, kept),
                                       kept, episodes)[kind]
            loss = fitted[1] - found[1]
            error = loss.std(ddof=1) / math.sqrt(len(loss)) if len(loss) > 1 else 0.0
            return found if loss.mean() <= error else None

        every = refit(light)
        if every is not None:
            return light, every
        dropped, kept_fit = [], None
        for member in light:
            if len(dropped) == len(light) - 1:  # all of them together: refused above
                break
            found = refit([*dropped, member])
            if found is not None:
                dropped, kept_fit = [*dropped, member], found
        return dropped, kept_fit

    def _validation_values(self, valid: Any, episodes: Sequence[Any], task: str, kind: str, params: Any,
                           booster: Any) -> np.ndarray:
        answers = self._learned_answers(valid, task, kind, params, booster)
        return np.array([episode_value(a, e.truth, task)[0] for a, e in zip(answers, episodes, strict=True)])

    @staticmethod
    def _learned_answers(table: Any, task: str, kind: str, params: Any, booster: Any) -> list[np.ndarray]:
        """The learner's answer on every episode of a stacked table."""
        if kind == "lgbm":
            flat = learned.lgbm_apply(booster, table.x, table.scores, task)
        else:
            flat = learned.fwls_apply(params, table.requests, table.scores, table.x[:, -1], table.episode)
        return table.split_outputs(flat)

    @staticmethod
    def _weight_basis(kind: str, model: Any, valid: Any) -> Any:
        """What effective weights are read from: LightGBM's absolute contributions on every
        validation row (TreeSHAP, computed once), or FWLS's fitted weights."""
        if kind == "lgbm":
            return np.abs(learned.lgbm_contributions(learned.lgbm_booster(model), valid.x))
        return model

    @staticmethod
    def _effective_weights(kind: str, basis: Any, valid: Any, features: Any,
                           rows: np.ndarray) -> dict[str, float]:
        """Each member's effective weight over the validation rows ``rows``: FWLS its mean
        weight, LightGBM its share of the mean absolute contribution."""
        members = features.members
        if kind == "lgbm":
            mean = basis[rows].mean(axis=0)
            names = features.names()
            total = float(mean.sum()) or 1.0
            return {m: float(sum(mean[j] for j, n in enumerate(names) if n.startswith(f"{m}:"))) / total
                    for m in members}
        requests = valid.requests[np.unique(valid.episode[rows])]
        return {m: float(w) for m, w in zip(members, (requests @ basis["weights"]).mean(axis=0), strict=True)}

    def _summarise(self, task: str, episodes: Sequence[Any], valid: Any, features: Any,
                   basis: Any) -> list[dict[str, Any]]:
        """Per band of validation episodes: each member's effective weight and the top features
        (``basis``: ``_weight_basis`` of the learner that answers)."""
        state = self.learned[task]
        kind = state["kind"]
        bands = np.array([band_of(len(e.context.history), self.bands) for e in episodes], dtype=int)
        names = features.names()
        out = []
        for b, band in enumerate(self.bands):
            idx = np.flatnonzero(bands == b)
            if not len(idx):
                continue
            rows = np.isin(valid.episode, idx)
            effective = self._effective_weights(kind, basis, valid, features, rows)
            if kind == "lgbm":
                top = [names[j] for j in np.argsort(-basis[rows].mean(axis=0))[:3]]
            else:
                top = sorted(effective, key=lambda m: -abs(effective[m]))[:3]
            out.append({"band": band_label(band), "episodes": int(len(idx)), "weights": effective, "top": top})
        return out

    def _answers(self, member: str, task: str) -> bool:
        return task != "rating" or self.members[member].predicts_ratings

    @staticmethod
    def _transform(output: np.ndarray, task: str) -> np.ndarray:
        output = np.asarray(output, dtype=np.float64)
        return normalise(output) if task == "next-item" else output

    def _default_route(self, band: Sequence[int | None], eligible: list[str]) -> dict[str, Any]:
        """The overview's rule for a band too thin on validation users to learn from."""
        row = [prefs for low, prefs in DEFAULT_TABLE if low <= band[0]][-1]
        member = next((m for m in row if m in eligible), FALLBACK)
        return {"members": [member], "weights": [1.0], "threshold": None, "metric": None,
                "runner_up": None, "runner_up_metric": None, "source": "default table"}

    def _best_route(self, idx: np.ndarray, episodes: Sequence[Any], transformed: dict[str, list],
                    confidences: Mapping[str, np.ndarray], eligible: list[str],
                    task: str) -> dict[str, Any]:
        """The route for one band, each candidate judged with its own calibrated breaker
        threshold (an unsure member that knows it is unsure can still be the best choice).

        One-standard-error rule: among the candidates whose mean validation metric is within
        one standard error (of the paired per-episode difference) of the best, the simplest
        (fewest members) wins, then the best mean. A blend must earn its extra members: on
        a few hundred validation users, fine blend weights mostly fit noise.
        """
        fallback = np.array([episode_value(transformed[FALLBACK][i], episodes[i].truth, task)[0]
                             for i in idx])

        def judged(members: tuple[str, ...], weights: np.ndarray) -> list[tuple]:
            values = np.zeros((len(weights), len(idx)))
            for j, i in enumerate(idx):
                stacked = np.stack([transformed[m][i] for m in members])
                values[:, j] = episode_value(weights @ stacked, episodes[i].truth, task)
            out = []
            for w, per_episode in zip(weights, values, strict=True):
                primary = members[int(np.argmax(w))]
                threshold, applied = self._calibrate(per_episode, fallback, primary, idx, confidences)
                out.append((members, tuple(float(x) for x in w), float(applied.mean()), threshold,
                            applied))
            return out

        singles = [judged((m,), np.ones((1, 1)))[0] for m in eligible]
        candidates = list(singles)
        ranked = sorted(singles, key=lambda c: -c[2])
        top = [c[0][0] for c in ranked[:self.max_blend + 1]]
        for size in range(2, min(self.max_blend, len(top)) + 1):
            for members in itertools.combinations(top, size):
                candidates += judged(members, simplex(size, self.blend_step))
        best = max(candidates, key=lambda c: c[2])
        within = [c for c in candidates
                  if best[2] - c[2] <= np.std(best[4] - c[4]) / np.sqrt(len(idx))]
        members, weights, value, threshold, _ = min(within, key=lambda c: (len(c[0]), -c[2]))
        others = sorted((c for c in candidates if set(c[0]) != set(members)), key=lambda c: -c[2])
        runner_up = others[0] if others else None
        return {"members": list(members), "weights": list(weights), "metric": value,
                "threshold": threshold,
                "runner_up": None if runner_up is None else _describe(runner_up[0], runner_up[1]),
                "runner_up_metric": None if runner_up is None else runner_up[2],
                "source": "validation"}

    @staticmethod
    def _calibrate(routed: np.ndarray, fallback: np.ndarray, primary: str, idx: np.ndarray,
                   confidences: Mapping[str, np.ndarray]) -> tuple[float | None, np.ndarray]:
        """The confidence threshold (of the route's main member) below which handing the
        request to the fallback helps the band's validation metric most (None = never), and
        the per-episode metric it leaves."""
        best, best_values = None, routed
        if primary == FALLBACK or primary not in confidences:
            return best, best_values
        conf = np.asarray(confidences[primary], dtype=np.float64)[idx]
        for q in np.arange(0.05, 0.51, 0.05):
            threshold = float(np.quantile(conf, q))
            values = np.where(conf < threshold, fallback, routed)
            if values.mean() > best_values.mean() + 1e-12:
                best, best_values = threshold, values
        return best, best_values

    def _learn_item_weights(self, episodes: Sequence[Any], transformed: dict[str, list],
                            outputs: Mapping[str, Sequence[np.ndarray]], confidences: Mapping[str, np.ndarray],
                            task: str) -> list[float]:
        """Weight of content per item band, by coordinate search over a grid on validation."""
        bases, bands = [], []
        for i, ep in enumerate(episodes):
            raw = {m: outputs[m][i] for m in self.needed(task, ep.context) if m in outputs}
            conf = {m: float(confidences[m][i]) for m in raw if m in confidences}
            base, _ = self._base_answer(task, ep.context, ep.candidates, raw, conf)
            bases.append(base)
            bands.append(self._item_bands(ep.candidates))

        def value(weights: np.ndarray) -> float:
            total = 0.0
            for i, ep in enumerate(episodes):
                w = weights[bands[i]]
                total += episode_value(w * transformed[self.content][i] + (1 - w) * bases[i], ep.truth,
                                       task)[0]
            return total / len(episodes)

        weights = np.zeros(len(self.item_bands))
        best = value(weights)
        for _ in range(2):
            for b in range(len(weights)):
                for candidate in ITEM_WEIGHT_GRID:
                    trial = weights.copy()
                    trial[b] = candidate
                    v = value(trial)
                    if v > best + 1e-12:
                        best, weights = v, trial
        return [float(w) for w in weights]

    # --- answering ------------------------------------------------------------------------

    @staticmethod
    def _primary(route: Mapping[str, Any]) -> str:
        return route["members"][int(np.argmax(route["weights"]))]

    def _item_bands(self, items: np.ndarray) -> np.ndarray:
        """Item band of each item by its training interactions (items added since: none)."""
        items = np.asarray(items, dtype=np.int64)
        counts = np.zeros(len(items), dtype=np.int64)
        known = items < len(self.item_counts)
        counts[known] = self.item_counts[items[known]]
        return np.array([band_of(int(c), self.item_bands) for c in counts], dtype=int)

    def _route_output(self, route: Mapping[str, Any], outputs: Mapping[str, np.ndarray | None],
                      confidence: float, fallback: np.ndarray | None,
                      n_items: int) -> tuple[np.ndarray, bool]:
        """The route's (transformed) blend, or the fallback's when the breaker trips."""
        threshold = route["threshold"]
        tripped = any(outputs.get(m) is None for m in route["members"]) or (
            threshold is not None and not confidence >= threshold)
        if tripped:
            # The fallback failing too leaves no ranking at all: every item alike.
            return (np.zeros(n_items) if fallback is None else fallback), True
        weights = route["weights"]
        return sum(w * outputs[m] for m, w in zip(route["members"], weights, strict=True)), False

    def _learned_models(self, task: str) -> tuple[Any, Any]:
        """The learned stacker's feature maker and LightGBM booster, rebuilt from saved data
        once per process."""
        if self._models is None:
            self._models = {}
        if task not in self._models:
            state = self.learned[task]
            features = learned.Features.__new__(learned.Features)
            vars(features).update(state["features"])
            booster = learned.lgbm_booster(state["booster"]) if state["kind"] == "lgbm" else None
            self._models[task] = (features, booster)
        return self._models[task]

    def _base_answer(self, task: str, context: Context, items: np.ndarray,
                     outputs: Mapping[str, np.ndarray | None],
                     confidences: Mapping[str, float]) -> tuple[np.ndarray, bool]:
        """The answer before the item-side content blend: the learned stacker's (the fallback's
        when a member it reads failed), or the table route's with its breaker."""
        state = self._learner(task, context)
        if state is None:
            ready = {m: None if o is None else self._transform(o, task) for m, o in outputs.items()}
            route = self.route(task, context)
            confidence = confidences.get(self._primary(route), -np.inf)
            return self._route_output(route, ready, confidence, fallback=ready.get(FALLBACK), n_items=len(items))
        # The learner reads the raw outputs; only the fallback's are z-scored, and only when used.
        if any(outputs.get(m) is None for m in state["members"]):
            fallback = outputs.get(FALLBACK)
            return (np.zeros(len(items)) if fallback is None else self._transform(fallback, task)), True
        features, booster = self._learned_models(task)
        raw = {m: outputs[m] for m in state["members"]}
        if state["kind"] == "lgbm":
            rows = features.rows(context, items, raw, confidences)
            answer = learned.lgbm_apply(booster, rows, rows[:, :len(state["members"])], task)
        else:
            answer = learned.fwls_apply(state["fwls"], features.request_row(context)[None],
                                        features.member_scores(raw, len(items)),
                                        features._item_log_count(items), np.zeros(len(items), dtype=int))
        return self._transform(answer, task), False

    def _learner(self, task: str, context: Context) -> dict[str, Any] | None:
        """The learned stacker's state when it answers this request; None when the table does:
        no learner for ``task``, or the source row (K = 0 with a source-domain history), which
        the learner cannot tell apart from a K = 0 request without one."""
        state = self.learned.get(task)
        if state is None or self._row_of(context, len(self._table(task))) == len(self.bands):
            return None
        return state

    def combine(self, task: str, context: Context, items: np.ndarray,
                outputs: Mapping[str, np.ndarray | None],
                confidences: Mapping[str, float]) -> tuple[np.ndarray, bool]:
        """The stack's answer from its members' raw outputs on one request (None = failed) and
        their confidences.

        The one place routing, the breaker and the item-side blend happen: ``score``, the
        batch path and the evaluation's reuse of already-fitted members all come through here.
        """
        result, tripped = self._base_answer(task, context, items, outputs, confidences)
        content = outputs.get(self.content)
        weights = np.asarray(self.item_weights.get(task, [0.0]))
        if content is not None and weights.any():
            w = weights[self._item_bands(items)]
            result = w * self._transform(content, task) + (1 - w) * result
        return result, tripped

    def needed(self, task: str, context: Context) -> list[str]:
        """The members whose outputs ``combine`` needs for this request."""
        state = self._learner(task, context)
        names = list(state["members"] if state else self.route(task, context)["members"]) + [FALLBACK]
        if any(self.item_weights.get(task, [])) and self.content in self.members:
            names.append(self.content)
        return list(dict.fromkeys(names))

    def _row_of(self, context: Context, n_rows: int) -> int:
        """The table row of a request: its support-size band, or the source row (the last,
        present only in tables learned on cross-domain data) for K = 0 with a source history."""
        if n_rows > len(self.bands) and _transferable(context):
            return len(self.bands)
        return band_of(len(context.history), self.bands)

    def route(self, task: str, context: Context) -> dict[str, Any]:
        """The table row of this request (the route itself when the table answers)."""
        table = self._table(task)
        return table[self._row_of(context, len(table))]

    def answered_by(self, task: str, context: Context) -> dict[str, Any]:
        """What answers this request, as the service reports it: the table's route, or the
        learned stacker with its members' effective weights in the request's band."""
        row = self.route(task, context)
        state = self.learned.get(task)
        if state is None or row["band"] == SOURCE_ROW:
            return row
        band = next((b for b in state.get("summary", []) if b["band"] == row["band"]), None)
        weights = band["weights"] if band else {m: 1.0 / len(state["members"]) for m in state["members"]}
        return {"band": row["band"], "members": list(weights), "weights": list(weights.values()),
                "threshold": None, "source": f"learned ({state['kind']})"}

    def _table(self, task: str) -> list[dict[str, Any]]:
        if task in self.tables:
            return self.tables[task]
        if task == "next-item" and self.tables:
            return next(iter(self.tables.values()))
        raise ThawError(f"this stack has learned no routing table for '{task}'; fit it with "
                        f"that protocol")

    def _call(self, name: str, ctx: Context, items: np.ndarray, task: str,
              budget: float | None) -> np.ndarray | None:
        """One member's output, or None when it raises, returns a non-finite value or the
        wrong shape, or runs past ``budget`` seconds (then the request goes on without it)."""
        member = self.members[name]
        call = member.predict if task == "rating" and member.predicts_ratings else member.score
        try:
            if budget is None:
                out = call(ctx, items)
            else:
                out = _pool().submit(call, ctx, items).result(timeout=budget)
        except (Exception, FutureTimeout):  # noqa: BLE001 - any member failure trips the breaker
            return None
        return _checked(out, items, task)

    def _answer(self, ctx: Context, items: np.ndarray, task: str) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        outputs = {m: self._call(m, ctx, items, task, self.time_budget) for m in self.needed(task, ctx)}
        result, tripped = self.combine(task, ctx, items, outputs, self._confidences(ctx, outputs))
        self.last_trips = [tripped]
        return result

    def _confidences(self, ctx: Context, outputs: Mapping[str, np.ndarray | None]) -> dict[str, float]:
        """Each answering member's confidence in its output (-inf: failed or unsure of itself)."""
        out = {}
        for name, output in outputs.items():
            try:
                out[name] = -np.inf if output is None else float(self.members[name].confidence(ctx, output))
            except Exception:  # noqa: BLE001 - an unsure member is an untrusted one
                out[name] = -np.inf
        return out

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self._answer(ctx, items, "next-item" if "next-item" in self.tables else self.task)

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self._answer(ctx, items, "rating")

    def _answer_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray],
                     task: str) -> list[np.ndarray]:
        """Batch path: each member is asked once for every request that needs it; a member
        whose batch call fails is asked request by request, so one bad request trips alone."""
        needs = [self.needed(task, c) for c in contexts]
        outputs: list[dict[str, np.ndarray | None]] = [{} for _ in contexts]
        for name in dict.fromkeys(n for need in needs for n in need):
            idx = [i for i, need in enumerate(needs) if name in need]
            member = self.members[name]
            many = member.predict_many if task == "rating" and member.predicts_ratings else member.score_many
            try:
                results = many([contexts[i] for i in idx], [items[i] for i in idx])
                checked = [_checked(r, items[i], task) for r, i in zip(results, idx, strict=True)]
            except Exception:  # noqa: BLE001
                checked = [self._call(name, contexts[i], items[i], task, None) for i in idx]
            for i, out in zip(idx, checked, strict=True):
                outputs[i][name] = out
        answers, self.last_trips = [], []
        for ctx, cand, out in zip(contexts, items, outputs, strict=True):
            result, tripped = self.combine(task, ctx, np.asarray(cand), out, self._confidences(ctx, out))
            answers.append(result)
            self.last_trips.append(tripped)
        return answers

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._answer_many(contexts, items, "next-item" if "next-item" in self.tables else self.task)

    def predict_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._answer_many(contexts, items, "rating")

    def answer_outputs(self, task: str, outputs: MemberOutputs) -> tuple[list[np.ndarray], list[bool]]:
        """``combine`` over episodes whose members' outputs were computed elsewhere (the
        evaluation's workers); returns the answers and which requests tripped the breaker."""
        answers, trips = [], []
        for i, ep in enumerate(outputs.episodes):
            raw = {m: _checked(outputs.outputs[m][i], ep.candidates, task) for m in self.needed(task, ep.context)}
            conf = {m: float(outputs.confidences[m][i]) if raw[m] is not None else -np.inf for m in raw}
            answer, tripped = self.combine(task, ep.context, ep.candidates, raw, conf)
            answers.append(answer)
            trips.append(tripped)
        return answers, trips

    def learned_record(self, task: str) -> dict[str, Any]:
        """What an evaluation records of the stack learned for ``task``: its members, table,
        learned stacker (without its fitted state), item weights and explanation."""
        return {"members": list(self.members), "table": self.tables[task],
                "learned": {k: v for k, v in self.learned.get(task, {}).items()
                            if k in ("kind", "members", "validation", "summary", "oof_episodes", "folds",
                                     "dropped", "validation_with_all")},
                "item_weights": self.item_weights[task], "item_bands": self.item_bands,
                "explain": self.explain()}

    # --- reading the table ----------------------------------------------------------------

    def explain(self) -> str:
        """The learned routing table as text: band, choice, weights, validation metrics."""
        lines = []
        for task, table in self.tables.items():
            metric = "NDCG@10" if task == "next-item" else "-MAE"
            lines.append(f"{task} (validation {metric}; breaker fallback: {FALLBACK})")
            lines.append(f"  {'band':6s} {'users':>5s}  {'choice':38s} {'metric':>7s}  "
                         f"{'threshold':>9s}  runner-up")
            for route in table:
                choice = _describe(route["members"], route["weights"])
                value = "-" if route["metric"] is None else f"{route['metric']:.4f}"
                threshold = "never" if route["threshold"] is None else f"{route['threshold']:.4g}"
                runner = ("-" if route["runner_up"] is None else
                          f"{route['runner_up']} ({route['runner_up_metric']:.4f})")
                source = "" if route["source"] == "validation" else f"  [{route['source']}]"
                lines.append(f"  {route['band']:6s} {route['users']:>5d}  {choice:38s} {value:>7s}  "
                             f"{threshold:>9s}  {runner}{source}")
            weights = self.item_weights.get(task, [])
            lines.append("  content weight by item band (training interactions): " + ", ".join(
                f"{band_label(b)}: {w:.2f}" for b, w in zip(self.item_bands, weights, strict=True)))
            if task in self.learned:
                lines += self._explain_learned(task, metric)
        return "\n".join(lines) if lines else "(this stack has not learned a table yet)"

    def _explain_learned(self, task: str, metric: str) -> list[str]:
        """The learned stacker in a few lines: which learner answers, how each did on
        validation users beside the table, and per band its members' effective weights."""
        state = self.learned[task]
        table_value = np.mean([r["metric"] for r in self.tables[task] if r["metric"] is not None] or [np.nan])
        scores = ", ".join(f"{k} {v:.4f}" for k, v in state["validation"].items())
        lines = [f"  answered by the learned stacker: {state['kind']} (validation {metric}: {scores}; "
                 f"table, in-sample per band, mean {table_value:.4f})",
                 f"  learned from {state['oof_episodes']} out-of-fold episodes of {state['oof_users']} "
                 f"training users ({state['folds']} folds of {state.get('fold_by', 'users')}); "
                 f"members: {', '.join(state['members'])}",
                 *self._explain_dropped(state, metric),
                 "  effective weight per band (" + ("share of mean |contribution|" if state["kind"] == "lgbm"
                                                   else "mean member weight") + ") and top features:"]
        for band in state.get("summary", []):
            weights = ", ".join(f"{m} {w:.2f}" for m, w in sorted(band["weights"].items(), key=lambda x: -abs(x[1])))
            lines.append(f"  {band['band']:6s} {weights}  | top: {', '.join(band['top'])}")
        return lines


    @staticmethod
    def _explain_dropped(state: Mapping[str, Any], metric: str) -> list[str]:
        dropped = state.get("dropped")
        if not dropped:
            return []
        before = ", ".join(f"{k} {v:.4f}" for k, v in state["validation_with_all"].items())
        return [f"  dropped (they added nothing validation could see): {', '.join(dropped)} "
                f"(validation {metric} with them: {before})"]


def _transferable(context: Context) -> bool:
    return len(context.history) == 0 and context.source is not None and len(context.source) > 0


def _describe(members: Sequence[str], weights: Sequence[float]) -> str:
    if len(members) == 1:
        return members[0]
    return " + ".join(f"{w:.1f} {m}" for m, w in zip(members, weights, strict=True))


def _checked(output: Any, items: np.ndarray, task: str) -> np.ndarray | None:
    """A member's output, or None when it is broken: the wrong shape, NaN, +inf, or (for
    ratings) any infinity. -inf ranks an item last, which is a legitimate score."""
    try:
        out = np.asarray(output, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    broken = np.isnan(out).any() or np.isposinf(out).any() or (
        task == "rating" and not np.isfinite(out).all())
    return None if out.shape != np.shape(items) or broken else out


def _pool() -> ThreadPoolExecutor:
    """Threads that run members under a time budget; a member that hangs holds one of them."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="thaw-stack")
    return _POOL


class StackTable(Stack):
    """The stack answered by its band table alone (learned on validation users), as before
    the learned stacker: kept to compare against, and for the smallest data sets."""

    name = "stack-table"
    main_job_item_cold = True  # the stack the main job runs on new items, not the learned one

    def __init__(self, members: Sequence[str | Recommender] | Mapping[str, Recommender] = DEFAULT_MEMBERS,
                 **kwargs: Any) -> None:
        super().__init__(members, **{"stacker": "table", **kwargs})
