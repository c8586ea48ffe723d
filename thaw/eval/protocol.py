"""The K-stratified cold-start protocol, the same for every method.

Each model is fitted once on ``split.train``. A held-out user then arrives at score time as a
Context holding their first K interactions; the model ranks the K+1-th among 100 negatives
(next-item) or predicts the ratings of everything after the support (rating). The same users
are scored at every K (those with more than max(K) interactions), so the cold-to-warm curve
compares like with like. Model selection only ever sees validation users.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from thaw import errors
from thaw.data.schema import Dataset
from thaw.data.splits import Split, item_folds, user_folds
from thaw.errors import ThawError
from thaw.eval.episodes import check_protocol, episode_metrics, episodes, fold_episodes, score_episodes
from thaw.eval.statistics import compare, degenerate_results, item_strata_table, summarise
from thaw.eval.workers import run_jobs
from thaw.models.base import (
    Episode,
    LearnsFromOutputs,
    MemberOutputs,
    ModelSelectionSkipped,
    OutOfFold,
    Recommender,
    kept_epoch,
    model_confidences,
    model_outputs,
    selection_skipped_message,
)

DEFAULT_KS = (0, 1, 3, 5, 10)


class DegenerateResultWarning(UserWarning):
    """A result that looks like a bug (leakage, constant scores, a copied model)."""


class FewUsersWarning(UserWarning):
    """So few test users are left at the largest K that the numbers mean little."""


class SplitValidator:
    """Scores a model on validation users only: mean NDCG@10 (next-item) or -RMSE (rating)."""

    def __init__(self, split: Split, protocol: str, ks: Sequence[int] = DEFAULT_KS) -> None:
        self.split, self.protocol, self.ks = split, protocol, tuple(ks)
        self.episodes = [e for k in ks for e in episodes(split, "val", k, protocol, max_k=max(ks))]
        self.warned = False  # set once ModelSelectionSkipped has been given for this validator

    @property
    def empty(self) -> bool:
        """No validation episode to select on: models fit as without a validator (see
        ``thaw.models.base.usable_validator``) and say so once."""
        return not self.episodes

    @property
    def reason(self) -> str | None:
        if self.episodes:
            return None
        if not self.split.val:
            return "the split has no validation users (--val-frac 0?)"
        return (f"none of the split's {len(self.split.val)} validation users has more than "
                f"{max(self.ks)} interactions (the largest K)")

    def episodes_at(self, ks: Sequence[int]) -> list[Episode]:
        """Validation episodes at each K (what the stack learns its routing table from), from
        the validation users the evaluation's own K would keep (more than its largest K
        interactions, and more than K): the same kind of user as the test users."""
        floor = max(self.ks)
        return [e for k in ks for e in episodes(self.split, "val", k, self.protocol,
                                                  max_k=max(k, floor))]

    def out_of_fold(self, models: Mapping[str, Recommender], data: Dataset, protocol: str, folds: int,
                    ks: Sequence[int], seed: int, *, jobs: int = 1, progress: bool = False,
                    epochs: Mapping[str, int] | None = None) -> OutOfFold:
        """``out_of_fold`` with this validator choosing the fold fits' settings, on users with
        more interactions than the evaluation's largest K (as its own episodes), in folds of
        items where the split holds items out (``folds_for``)."""
        return out_of_fold(models, data, self, protocol, folds, ks, max(self.ks), seed, jobs=jobs,
                           progress=progress, by=folds_for(self.split.kind), item_strata=self.split.item_strata,
                           epochs=epochs)

    def __call__(self, model: Recommender) -> float:
        if not self.episodes:  # models ask ``empty`` first; NaN here is never a choice
            return float("nan")
        rows, _ = score_episodes(model, self.episodes, self.protocol)
        if self.protocol == "rating" and model.predicts_ratings:
            return -float(np.mean([r["rmse"] for r in rows]))
        return float(np.nanmean([r["ndcg@10"] for r in rows]))


@dataclass
class EvalResult:
    """A tidy results table plus everything needed to audit it."""

    table: pd.DataFrame          # model, K, metric, value, low, high, users
    per_user: pd.DataFrame       # model, K, user, metric, value
    comparisons: pd.DataFrame    # K, metric, model_a, model_b, better, test, users, diff,
    #                              p_value, p_holm (Holm within K x metric), significant
    timings: pd.DataFrame        # model, fit_seconds, score_seconds
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    item_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    """New-item splits, next-item protocol: like ``table`` with the target item's stratum
    (its training interactions, see ``make_split``) in column N instead of K, over every K."""
    user_ids: np.ndarray | None = None
    """The data set's own id of each internal user index (``per_user.user``), for the files."""
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    """New-item and both-cold splits, next-item protocol: each test episode's target item (K,
    user, item). Many users share one new item as their target there, so a stack's verdicts
    resample targets, not users (``thaw.eval.headroom``); empty elsewhere."""


def evaluate(models: Mapping[str, Recommender] | Sequence[str] | Recommender, split: Split, *,
             protocol: str = "next-item", ks: Sequence[int] = DEFAULT_KS,
             candidates: str = "sampled", n_bootstrap: int = 1000, seed: int = 0,
             progress: bool = True, fit: bool = True, jobs: int = 1,
             cutoffs: Sequence[int] = (1, 10),
             pairs: Sequence[tuple[str, str]] | None = None,
             expected_seconds: Mapping[str, float] | None = None,
             min_users: int = 30) -> EvalResult:
    """Fit each model on the split's training users and evaluate it on its test users.

    ``cutoffs`` are the N of the next-item protocol's Hit@N and NDCG@N. ``pairs`` names the
    model pairs whose paired tests go into ``comparisons`` (default: every pair; see
    ``compare``). Fewer than ``min_users`` test users at the largest K warns (FewUsersWarning).
    ``jobs > 1`` fits and scores that many models at once in worker processes. Every model is
    seeded and runs on one thread, so the numbers are the same as with ``jobs=1``; the models
    passed in are then fitted in the workers only and come back unfitted. Workers end with the
    evaluation, however it ends (an exception, Ctrl-C, or the death of this process).
    ``expected_seconds`` (each model's fit and score time in an earlier run) gives the progress
    bar an ETA.
    """
    check_protocol(protocol, candidates)
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 0:
        raise ThawError("ks must be non-negative integers")
    if jobs < 1:
        raise ThawError("jobs must be at least 1")
    if n_bootstrap < 1:
        raise ThawError("n_bootstrap must be at least 1")
    models = _as_models(models, seed)
    unknown = sorted({m for pair in pairs or () for m in pair} - set(models))
    if unknown:
        raise ThawError(f"cannot compare {', '.join(unknown)}: not among the models evaluated")
    if protocol == "rating":
        _check_has_ratings(split)
    test_eps = {k: episodes(split, "test", k, protocol, max_k=max(ks), candidates=candidates)
                for k in ks}
    users_note = _check_test_users(split, len(test_eps[ks[0]]), max(ks), min_users)
    # A model that learns from outputs (the stack) whose members are all in this evaluation is
    # learned from their outputs here, so no member is fitted twice.
    stacks = {name: m for name, m in models.items() if fit and isinstance(m, LearnsFromOutputs)
              and all(member in models for member in m.member_names())}
    val_ks = sorted({k for st in stacks.values() for k in st.validation_ks})
    # One validator for every model: an empty one warns here, once, not once per model.
    validator = SplitValidator(split, protocol, ks)
    skipped = [selection_skipped_message(validator)] if fit and validator.empty else []
    for note in skipped:
        warnings.warn(note, ModelSelectionSkipped, stacklevel=2)
        validator.warned = True
    stack_val_eps = validator.episodes_at(val_ks) if stacks else []
    collect = frozenset(member for st in stacks.values() for member in st.member_names())
    # Unfitted copies of the members, for the stacks' out-of-fold fits (fitting in this
    # process, with jobs=1, would otherwise hand the folds fitted models).
    specs = {m: copy.deepcopy(models[m]) for m in collect if m in models}
    fitted = {name: m for name, m in models.items() if name not in stacks}
    job = _ModelJob(split, protocol, ks, test_eps, fit, tuple(cutoffs), collect, stack_val_eps,
                    validator)
    outcomes = run_jobs(job, fitted, jobs, expected_seconds or {}, f"evaluate ({protocol})", progress)
    stack_meta = {}
    for name, st in stacks.items():
        outcomes[name], stack_meta[name] = _learn_from_outputs(name, st, specs, split, protocol, ks, test_eps,
                                                               stack_val_eps, outcomes, tuple(cutoffs),
                                                               validator, jobs, progress)
    per_user_rows, timing_rows, notes = [], [], []
    for name in models:  # the caller's order, whatever order the workers finished in
        rows, timing, model_notes, _ = outcomes[name]
        per_user_rows += rows
        timing_rows.append(timing)
        notes += model_notes
    per_user = pd.DataFrame(per_user_rows, columns=["model", "K", "user", "metric", "value"])
    table = summarise(per_user, n_bootstrap=n_bootstrap, seed=seed)
    notes += degenerate_results(per_user)
    for note in notes:
        warnings.warn(note, DegenerateResultWarning, stacklevel=2)
    meta = {"protocol": protocol, "split_kind": split.kind, "ks": list(ks), "candidates": candidates, "seed": seed,
            "split": split.describe(), "test_users": len(test_eps[ks[0]]),
            "n_negatives": int(np.median([len(v) for v in split.negatives.values()]))
            if split.negatives else 0}
    if stack_meta:
        meta["stacks"] = stack_meta
    targets = pd.DataFrame(
        [(k, e.user, int(e.candidates[0])) for k, eps in test_eps.items() for e in eps]
        if protocol == "next-item" and split.kind != "new-user" else [], columns=["K", "user", "item"])
    return EvalResult(table, per_user, compare(per_user, pairs), pd.DataFrame(
        timing_rows, columns=["model", "fit_seconds", "score_seconds"]), users_note + skipped + notes, meta,
        item_strata_table(per_user, split, test_eps, protocol, n_bootstrap, seed),
        user_ids=np.asarray(split.train.user_ids), targets=targets)


def _check_has_ratings(split: Split) -> None:
    """The rating protocol on data whose ratings are all one value (a data set without a
    rating column reads as all 1.0) would report an MAE of 0 for every model: an error."""
    values = np.concatenate([split.train.interactions.rating, *(s.rating for s in split.test.values())])
    if len(values) and np.all(values == values[0]):
        name_it = errors.option("columns", "rating=COLUMN", "{'rating': 'COLUMN'}")
        raise ThawError(f"the rating protocol needs ratings, but every rating in the data is {values[0]:g} "
                        "(a data set without a rating column?); use the next-item protocol, or name "
                        f"the rating column ({name_it})")


def _check_test_users(split: Split, n_users: int, max_k: int, min_users: int) -> list[str]:
    """An error when no test user is left to evaluate, saying why; a warning (returned and
    given as FewUsersWarning) when fewer than ``min_users`` are."""
    if not split.test:
        raise ThawError(f"the split has no test users, so there is nothing to evaluate (its "
                        f"{len(split.val)} validation users only choose models' settings)")
    if n_users == 0:
        longest = max(len(s) for s in split.test.values())
        raise ThawError(f"none of the split's {len(split.test)} test users has more than {max_k} "
                        f"interaction{'s' * (max_k != 1)} (the most is {longest}), and only those are evaluated at "
                        f"every K: lower the largest K below {longest}")
    if n_users >= min_users:
        return []
    note = (f"only {n_users} of the split's {len(split.test)} test users have more than {max_k} "
            f"interaction{'s' * (max_k != 1)} (the largest K), and only they are evaluated: the numbers mean little "
            f"below {min_users}; lower the largest K")
    warnings.warn(note, FewUsersWarning, stacklevel=3)
    return [note]




@dataclass(frozen=True)
class _ModelJob:
    """Fit one model (validating on validation users only) and score it at every K.

    A picklable callable, so worker processes can run it.
    """

    split: Split
    protocol: str
    ks: tuple[int, ...]
    test_eps: dict[int, list[Episode]]
    fit: bool
    cutoffs: tuple[int, ...]
    collect: frozenset[str] = frozenset()
    """Models whose raw outputs and confidences a stack will be learned from."""
    stack_val_eps: list[Episode] = field(default_factory=list)
    validator: SplitValidator | None = None
    """The evaluation's validator (built here when None)."""

    def __call__(self, name: str, model: Recommender) -> tuple[list[tuple], tuple, list[str], dict]:
        start = time.perf_counter()
        if self.fit:
            model.set_task(self.protocol)
            validate = self.validator or SplitValidator(self.split, self.protocol, self.ks)
            model.fit(self.split.train, validate=validate)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        rates = self.protocol == "rating" and model.predicts_ratings
        outputs = {k: model_outputs(model, self.test_eps[k], self.protocol) for k in self.ks}
        rows_out, notes = _rows_and_notes(name, self.test_eps, outputs, self.protocol, rates,
                                          self.cutoffs)
        collected: dict[str, Any] = {}
        if name in self.collect:
            collected["epoch"] = kept_epoch(model)
            collected["test"] = outputs
            collected["test_confidence"] = {k: model_confidences(model, self.test_eps[k], outputs[k])
                                            for k in self.ks}
            collected["val"] = model_outputs(model, self.stack_val_eps, self.protocol)
            collected["val_confidence"] = model_confidences(model, self.stack_val_eps, collected["val"])
        return rows_out, (name, fit_seconds, time.perf_counter() - start), notes, collected


def _rows_and_notes(name: str, test_eps: Mapping[int, Sequence[Episode]],
                    outputs: Mapping[int, Sequence[np.ndarray]], protocol: str, rates: bool,
                    cutoffs: Sequence[int]) -> tuple[list[tuple], list[str]]:
    """Per-user metric rows of outputs at every K, and notes on constant or NaN outputs."""
    rows_out: list[tuple] = []
    flags = {"constant": 0, "nan": 0, "episodes": 0}
    for k, eps in test_eps.items():
        rows, f = episode_metrics(name, eps, outputs[k], protocol, rates, cutoffs)
        flags["constant"] += f["constant"]
        flags["nan"] += f["nan"]
        flags["episodes"] += len(rows)
        for ep, row in zip(eps, rows, strict=True):
            rows_out += [(name, k, ep.user, m, v) for m, v in row.items()]
    notes = []
    if flags["constant"]:
        notes.append(f"{name}: scored every candidate the same for {flags['constant']} of "
                     f"{flags['episodes']} episodes (ties count against it)")
    if flags["nan"]:
        notes.append(f"{name}: returned NaN scores in {flags['nan']} of {flags['episodes']} "
                     "episodes (NaN counts against it)")
    return rows_out, notes



def _learn_from_outputs(name: str, model: LearnsFromOutputs, specs: Mapping[str, Recommender], split: Split,
                        protocol: str, ks: tuple[int, ...], test_eps: dict[int, list[Episode]],
                        val_eps: list[Episode], outcomes: Mapping[str, tuple], cutoffs: tuple[int, ...],
                        validator: SplitValidator, jobs: int, progress: bool) -> tuple[tuple, dict]:
    """Learn a model from its members' validation outputs (and the out-of-fold outputs it asks
    for, refitted from the unfitted ``specs``) and score it from their test outputs (the
    answers its own ``score`` gives, so the numbers are those of a fitted model). Its fit
    seconds include the out-of-fold fits."""
    model.set_task(protocol)
    collected = {m: outcomes[m][3] for m in model.member_names()}

    def outputs(eps: list[Episode], part: str, k: int | None = None) -> MemberOutputs:
        def pick(c: Mapping[str, Any], key: str) -> Any:
            return c[key] if k is None else c[key][k]

        return MemberOutputs(eps, {m: pick(c, part) for m, c in collected.items()},
                             {m: pick(c, f"{part}_confidence") for m, c in collected.items()},
                             {m: c["epoch"] for m, c in collected.items() if c["epoch"] is not None})

    val = outputs(val_eps, "val").at(model.validation_ks)
    oof = model.out_of_fold(split.train, validator, val, specs, jobs=jobs, progress=progress)
    start = time.perf_counter()
    model.learn_from_outputs(split.train, val, oof)
    fit_seconds = time.perf_counter() - start + (oof.seconds if oof is not None else 0.0)
    start = time.perf_counter()
    rates = protocol == "rating" and model.predicts_ratings

    def answer() -> tuple[dict[int, list[np.ndarray]], dict[int, float]]:
        answers, trips = {}, {}
        for k in ks:
            answers[k], fell_back = model.answer_outputs(protocol, outputs(test_eps[k], "test", k))
            trips[k] = float(np.mean(fell_back)) if fell_back else 0.0
        return answers, trips

    answers, trips = answer()
    rows_out, notes = _rows_and_notes(name, test_eps, answers, protocol, rates, cutoffs)
    # The alternatives validation did not choose are reported beside it, as "<name>:<alternative>".
    for other in model.alternatives(protocol):
        with model.answering_with(protocol, other):
            other_answers, _ = answer()
        rows, _ = _rows_and_notes(f"{name}:{other}", test_eps, other_answers, protocol, rates, cutoffs)
        rows_out += rows
    meta = {**model.learned_record(protocol), "trip_share": trips}
    return (rows_out, (name, fit_seconds, time.perf_counter() - start), notes, {}), meta


@dataclass(frozen=True)
class _FoldJob:
    """Fit one member copy on every fold but one and score the held-out fold's users
    (picklable, for the worker processes)."""

    data: Dataset
    protocol: str
    folds: int
    ks: tuple[int, ...]
    floor: int
    seed: int
    validator: Any
    by: str = "users"
    item_strata: tuple[int, ...] = (0,)

    def __call__(self, name: str,
                 task: tuple[int, Recommender, int | None]) -> tuple[list[np.ndarray], np.ndarray, float]:
        fold, model, epochs = task
        split = self.splits()[fold]
        eps = fold_episodes(split, self.ks, self.protocol, self.floor)
        start = time.perf_counter()
        model.set_task(self.protocol)
        validator = self.validator
        if epochs is not None:  # as long as the full fit trained: no epoch chosen here
            model.epochs, validator = epochs, None  # type: ignore[attr-defined]
        model.fit(split.train, validate=validator)
        outputs = model_outputs(model, eps, self.protocol)
        return outputs, model_confidences(model, eps, outputs), time.perf_counter() - start

    def splits(self) -> list[Split]:
        if self.by == "items":
            return item_folds(self.data, self.folds, seed=self.seed, item_strata=self.item_strata)
        return user_folds(self.data, self.folds, seed=self.seed)


def folds_for(split_kind: str) -> str:
    """Item folds for a new-item split, whose test requests rank items no member has seen;
    user folds for every other kind."""
    return "items" if split_kind == "new-item" else "users"


def out_of_fold(models: Mapping[str, Recommender], data: Dataset, validator: Any, protocol: str,
                folds: int, ks: Sequence[int], floor: int, seed: int, *, jobs: int = 1,
                progress: bool = False, by: str = "users", item_strata: Sequence[int] = (0,),
                epochs: Mapping[str, int] | None = None) -> OutOfFold:
    """Refit copies of the (unfitted) ``models`` on ``folds`` folds of ``data``'s users (or,
    ``by="items"``, its items) and score each fold's held-out users (or their interactions
    with the held-out items, which keep ``item_strata`` first interactions in training) at
    every K in ``ks``. Fits select settings on ``validator``'s
    users, as the full fits do; ``jobs > 1`` runs the fold fits in worker processes.

    Folds of items train each model of ``epochs`` (those fitted epoch by epoch) for as many
    epochs as its full fit kept, not for as many as their own validation picks: what a model
    scores an item it never saw comes from its feature path, whose level moves with training
    length, and the stacker learns that level from the folds and meets the full fit's at
    answer time (DeepFM on ML-100k's new-item split keeps epoch 1 in full and 5-8 in folds).
    Folds of users train as the full fits do; they score items every fit has seen."""
    if by not in ("users", "items"):
        raise ValueError(f"folds are of users or items, not {by!r}")
    job = _FoldJob(data, protocol, folds, tuple(ks), floor, seed, validator, by, tuple(item_strata))
    splits = job.splits()
    fixed = dict(epochs or {}) if by == "items" else {}
    tasks = {f"{name} fold {f + 1}/{folds}": (f, copy.deepcopy(model), fixed.get(name))
             for name, model in models.items() for f in range(folds)}
    results = run_jobs(job, tasks, jobs, {}, f"stack: out-of-fold fits ({protocol}, {by})", progress)
    eps, fold_of, counts = [], [], []
    outputs: dict[str, list[np.ndarray]] = {m: [] for m in models}
    confidences: dict[str, list[np.ndarray]] = {m: [] for m in models}
    for f, split in enumerate(splits):
        these = fold_episodes(split, ks, protocol, floor)
        eps += these
        fold_of += [f] * len(these)
        fold_counts = np.bincount(split.train.interactions.item, minlength=data.n_items)
        counts += [fold_counts] * len(these)
        for m in models:
            out, conf, _ = results[f"{m} fold {f + 1}/{folds}"]
            outputs[m] += out
            confidences[m].append(conf)
    return OutOfFold(eps, outputs, {m: np.concatenate(c) if c else np.zeros(0) for m, c in confidences.items()},
                     fold=np.asarray(fold_of, dtype=np.int64), seconds=float(sum(r[2] for r in results.values())),
                     item_counts=counts, by=by)


def _as_models(models: Mapping[str, Recommender] | Sequence[str] | Recommender,
               seed: int) -> dict[str, Recommender]:
    """Models by name are made here, seeded with the evaluation's seed."""
    from thaw.registry import make_model  # the registry imports every model: only when needed

    if isinstance(models, Recommender):
        return {models.name: models}
    if isinstance(models, Mapping):
        return dict(models)
    return {name: make_model(name, seed=seed) for name in models}


