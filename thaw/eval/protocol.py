"""The K-stratified cold-start protocol, the same for every method.

Each model is fitted once on ``split.train``. A held-out user then arrives at score time as a
Context holding their first K interactions; the model ranks the K+1-th among 100 negatives
(next-item) or predicts the ratings of everything after the support (rating). The same users
are scored at every K (those with more than max(K) interactions), so the cold-to-warm curve
compares like with like. Model selection only ever sees validation users.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from thaw import distributed, errors
from thaw.data.schema import Dataset
from thaw.data.splits import Split, item_stratum, user_folds
from thaw.errors import ThawError
from thaw.eval.metrics import bootstrap_interval, graded_ndcg, ranking_metrics, rating_errors, target_rank
from thaw.models.base import Context, ModelSelectionSkipped, Recommender, selection_skipped_message

PROTOCOLS = ("next-item", "rating")
METRICS = {
    "next-item": ("hit@1", "hit@10", "ndcg@10", "mrr", "auc"),
    "rating": ("mae", "rmse", "ndcg@3", "ndcg@10"),
}
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
DEFAULT_KS = (0, 1, 3, 5, 10)


class DegenerateResultWarning(UserWarning):
    """A result that looks like a bug (leakage, constant scores, a copied model)."""


class FewUsersWarning(UserWarning):
    """So few test users are left at the largest K that the numbers mean little."""


@dataclass(frozen=True)
class Episode:
    """One held-out user at one K: what the model is told, what it must rank, the truth."""

    user: int
    k: int
    context: Context
    candidates: np.ndarray
    """next-item: the target first, then the negatives; rating: the query items."""
    truth: np.ndarray
    """rating protocol: the query's true ratings; next-item: empty."""


def episodes(split: Split, part: str, k: int, protocol: str, *, max_k: int,
             candidates: str = "sampled") -> list[Episode]:
    """Episodes of the val or test users who have more than ``max_k`` interactions."""
    _check_protocol(protocol, candidates)
    out = []
    for user, seq in split.sequences(part).items():
        if len(seq) <= max_k:
            continue
        # The support's rows carry no user id: a model knows who asks only through
        # Context.user (None for a user it was not trained on).
        support = replace(seq.take(slice(0, k)), user=np.full(k, -1))
        ctx = Context(user=user if split.users_known else None, history=support,
                      profile=split.train.profile(user), source=split.sources.get(user))
        if protocol == "next-item":
            target = seq.item[k]
            if candidates == "sampled":
                items = np.concatenate([[target], split.negatives[user]])
            else:
                # Every item of the user's own history is out, not only the support and the
                # target: their later positives and, on warm and new-item splits, training rows.
                pool = split.held_items if len(split.held_items) else np.arange(split.train.n_items)
                others = np.setdiff1d(pool, np.union1d(seq.item, _own_items(split, user)))
                items = np.concatenate([[target], others])
            out.append(Episode(user, k, ctx, items.astype(np.int64), np.empty(0)))
        else:
            query = seq.take(slice(k, None))
            out.append(Episode(user, k, ctx, query.item, query.rating))
    return out


def _own_items(split: Split, user: int) -> np.ndarray:
    """The items a held-out user interacted with anywhere in the split's data (``split.seen``;
    for a Split built without it, their training rows)."""
    if user in split.seen:
        return split.seen[user]
    train = split.train.interactions
    return np.unique(train.item[train.user == user])


def _check_protocol(protocol: str, candidates: str) -> None:
    if protocol not in PROTOCOLS:
        raise ThawError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if candidates not in ("sampled", "full"):
        raise ThawError("candidates must be 'sampled' (target + 100 negatives) or 'full'")


def model_outputs(model: Recommender, eps: Sequence[Episode], protocol: str) -> list[np.ndarray]:
    """What the protocol reads from a model for each episode: predicted ratings under the
    rating protocol (where the model predicts them), scores otherwise."""
    if not eps:
        return []
    rates = protocol == "rating" and model.predicts_ratings
    call = model.predict_many if rates else model.score_many
    outputs = call([e.context for e in eps], [e.candidates for e in eps])
    return [np.asarray(o, dtype=np.float64) for o in outputs]


def score_episodes(model: Recommender, eps: Sequence[Episode], protocol: str,
                   cutoffs: Sequence[int] = (1, 10)) -> tuple[list[dict[str, float]], dict[str, int]]:
    """Per-episode metrics (next-item: Hit@N and NDCG@N at each cutoff N, MRR, AUC), plus
    counts of suspicious score vectors (constant, NaN)."""
    outputs = model_outputs(model, eps, protocol)
    return episode_metrics(model.name, eps, outputs, protocol,
                           protocol == "rating" and model.predicts_ratings, cutoffs)


def episode_metrics(name: str, eps: Sequence[Episode], outputs: Sequence[np.ndarray], protocol: str,
                    rates: bool, cutoffs: Sequence[int] = (1, 10)
                    ) -> tuple[list[dict[str, float]], dict[str, int]]:
    """The metrics of outputs already computed (``rates``: they are predicted ratings)."""
    flags = {"constant": 0, "nan": 0}
    rows: list[dict[str, float]] = []
    for ep, s in zip(eps, outputs, strict=True):
        s = np.asarray(s, dtype=np.float64)
        if s.shape != ep.candidates.shape:
            raise ThawError(f"model '{name}' returned {s.shape[0] if s.ndim else 0} values "
                            f"for {len(ep.candidates)} items")
        flags["nan"] += int(np.isnan(s).any())
        flags["constant"] += int(len(s) > 1 and np.all(s == s[0]))
        if protocol == "next-item":
            rows.append(ranking_metrics(target_rank(s[0], s[1:]), len(s) - 1, ks=tuple(cutoffs)))
        else:
            row = rating_errors(s, ep.truth) if rates else {}
            row["ndcg@3"] = graded_ndcg(s, ep.truth, 3)
            row["ndcg@10"] = graded_ndcg(s, ep.truth, 10)
            rows.append(row)
    return rows, flags


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
    _check_protocol(protocol, candidates)
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
    # A stack whose members are all in this evaluation is learned from their outputs here,
    # so no member is fitted twice.
    stacks = {name: m for name, m in models.items() if fit and getattr(m, "learns_from_outputs", False)
              and all(member in models for member in m.members)}
    val_ks = sorted({k for st in stacks.values() for k in st.validation_ks})
    # One validator for every model: an empty one warns here, once, not once per model.
    validator = SplitValidator(split, protocol, ks)
    skipped = [selection_skipped_message(validator)] if fit and validator.empty else []
    for note in skipped:
        warnings.warn(note, ModelSelectionSkipped, stacklevel=2)
        validator.warned = True
    stack_val_eps = validator.episodes_at(val_ks) if stacks else []
    collect = frozenset(member for st in stacks.values() for member in st.members)
    # Unfitted copies of the members, for the stacks' out-of-fold fits (fitting in this
    # process, with jobs=1, would otherwise hand the folds fitted models).
    specs = {m: copy.deepcopy(models[m]) for m in collect if m in models}
    fitted = {name: m for name, m in models.items() if name not in stacks}
    job = _ModelJob(split, protocol, ks, test_eps, fit, tuple(cutoffs), collect, stack_val_eps,
                    validator)
    outcomes = _run_jobs(job, fitted, jobs, expected_seconds or {}, f"evaluate ({protocol})", progress)
    stack_meta = {}
    for name, st in stacks.items():
        oof = _stack_out_of_fold(st, specs, split, protocol, validator, stack_val_eps, outcomes, ks, jobs,
                                 progress)
        outcomes[name], stack_meta[name] = _stack_from_outputs(name, st, split, protocol, ks, test_eps,
                                                              stack_val_eps, outcomes, tuple(cutoffs), oof)
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
    return EvalResult(table, per_user, compare(per_user, pairs), pd.DataFrame(
        timing_rows, columns=["model", "fit_seconds", "score_seconds"]), users_note + skipped + notes, meta,
        item_strata_table(per_user, split, test_eps, protocol, n_bootstrap, seed),
        user_ids=np.asarray(split.train.user_ids))


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


# --- worker processes --------------------------------------------------------------------------

def _run_jobs(job: Callable[[str, Any], Any], tasks: Mapping[str, Any], jobs: int,
              expected: Mapping[str, float], desc: str, progress: bool) -> dict[str, Any]:
    """``job(name, task)`` for every task, here (``jobs == 1`` or a single task) or in ``jobs``
    worker processes, under one progress bar; the outcomes by name.

    Under torch.distributed the tasks are dealt out over the ranks by expected seconds; each
    rank runs its share alone and every rank gets every outcome (the jobs are seeded one by
    one, so the outcomes are one process's)."""
    if distributed.active():
        names = list(tasks)
        mine = distributed.deal([expected.get(n) or 1.0 for n in names])
        if distributed.debug():
            print(f"rank {distributed.rank()} runs {', '.join(names[i] for i in mine) or 'nothing'} "
                  f"of {desc}", file=sys.stderr, flush=True)
        with distributed.alone():
            local = _run_jobs(job, {names[i]: tasks[names[i]] for i in mine}, jobs, expected, desc,
                              progress and distributed.is_main())
        gathered = {n: o for outcomes in distributed.gather(local) for n, o in outcomes.items()}
        return {n: gathered[n] for n in names}
    bar = _Progress(list(tasks), 1 if jobs == 1 or len(tasks) == 1 else min(jobs, len(tasks)),
                    expected, desc, progress)
    try:
        if bar.jobs > 1:
            return _in_workers(job, tasks, bar)
        outcomes = {}
        for name, task in tasks.items():
            bar.started(name)
            outcomes[name] = job(name, task)
            bar.finished(name)
        return outcomes
    finally:
        bar.close()


def _in_workers(job: _ModelJob, models: Mapping[str, Recommender], bar: _Progress) -> dict[str, tuple]:
    """Run ``job`` on every model in ``bar.jobs`` worker processes; the outcomes by name.

    Workers are spawned, not forked (a forked child of a process that has used torch's thread
    pools can deadlock), born with SIGINT blocked, and tied to this process (see
    ``_worker_start``). Whatever ends the wait (a worker's exception, Ctrl-C, any other
    signal turned exception) stops every worker before it propagates: nothing keeps fitting.
    """
    context = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=bar.jobs, mp_context=context, initializer=_worker_start,
                               initargs=(os.getpid(),))
    outcomes: dict[str, tuple] = {}
    try:
        with _sigint_blocked():  # inherited: a Ctrl-C is the parent's to handle
            futures: dict[Future, str] = {pool.submit(job, name, model): name
                                          for name, model in models.items()}
        for name in list(models)[:bar.jobs]:
            bar.started(name)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes[futures[future]] = future.result()
                bar.finished(futures[future])
            bar.refresh()
    except BaseException:
        _stop_workers(pool, before)
        raise
    pool.shutdown()
    return outcomes


def _stop_workers(pool: ProcessPoolExecutor, before: set) -> None:
    """Cancel what has not started and end the workers now: SIGTERM, then SIGKILL after 2 s.
    Swept until no child is left that was not there ``before``: the pool's manager thread can
    still be starting a worker while the first ones are stopped."""
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 10.0
    while workers := set(multiprocessing.active_children()) - before:
        for process in workers:
            process.terminate()
        grace = time.monotonic() + 2.0
        for process in workers:
            process.join(max(0.0, grace - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # a worker being started now shows up in the next sweep


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread inside the block (a pending one arrives after it);
    processes and threads started inside inherit the block."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_start(parent: int) -> None:
    """A worker's first act: ignore Ctrl-C (the parent stops its workers itself), and end
    when the parent ends, however it ends (SIGKILL and SIGTERM included): on Linux the kernel
    sends SIGKILL when the parent dies (PR_SET_PDEATHSIG); everywhere a watchdog thread
    exits when the worker's parent is no longer ``parent``. Warnings print as one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="thaw-parent-watch").start()
    warnings.showwarning = _warning_line


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _warning_line(message: Any, category: Any, filename: Any, lineno: Any, file: Any = None,
                  line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- the progress bar --------------------------------------------------------------------------

class _Progress:
    """A bar over the models that names those running now (with how long each has run) and,
    when every remaining model has an expected time, the ETA. ``jobs`` workers take the
    models in order, so the running ones are the first ``jobs`` unfinished."""

    def __init__(self, names: list[str], jobs: int, expected: Mapping[str, float], desc: str,
                 enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.names, self.jobs, self.expected, self.clock = names, jobs, dict(expected), clock
        self.start: dict[str, float] = {}
        self.done: set[str] = set()
        self.bar = tqdm(total=len(names), desc=desc, disable=not enabled, leave=False, unit="model",
                        bar_format="{desc}: {n_fmt}/{total_fmt} models [{elapsed}{postfix}]")

    def started(self, name: str) -> None:
        self.start.setdefault(name, self.clock())
        self.refresh()

    def finished(self, name: str) -> None:
        self.done.add(name)
        waiting = [n for n in self.names if n not in self.done and n not in self.start]
        if waiting and len(self.running()) < self.jobs:
            self.start[waiting[0]] = self.clock()
        self.bar.set_postfix_str(self.text(), refresh=False)
        self.bar.update(1)

    def running(self) -> list[str]:
        return [n for n in self.names if n in self.start and n not in self.done]

    def eta(self) -> float | None:
        """Seconds until the last model is done if each takes its expected time: the running
        ones finish their remainder, then the waiting ones go in order to the first free worker."""
        left = [n for n in self.names if n not in self.done]
        if not left or any(n not in self.expected for n in left):
            return None
        now = self.clock()
        free = [max(0.0, self.expected[n] - (now - self.start[n])) for n in self.running()]
        free += [0.0] * (self.jobs - len(free))
        heapq.heapify(free)
        for name in left:
            if name not in self.start:
                heapq.heappush(free, heapq.heappop(free) + self.expected[name])
        return max(free, default=0.0)

    def text(self) -> str:
        now = self.clock()
        running = ", ".join(f"{n} {_clock(now - self.start[n])}" for n in self.running())
        eta = self.eta()
        return "; ".join(part for part in (f"running {running}" if running else "",
                                           "" if eta is None else f"ETA {_clock(eta)}") if part)

    def refresh(self) -> None:
        self.bar.set_postfix_str(self.text(), refresh=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def item_strata_table(per_user: pd.DataFrame, split: Split, test_eps: Mapping[int, Sequence[Episode]],
                      protocol: str, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """The item-side cold-to-warm curve (new-item and both splits, next-item protocol): every
    episode, at every K, grouped by its target item's training interactions read in the
    split's item strata; column N replaces K and ``users`` counts episodes."""
    columns = ["model", "N", "metric", "value", "low", "high", "users"]
    if split.kind not in ("new-item", "both") or protocol != "next-item":
        return pd.DataFrame(columns=columns)
    counts = np.bincount(split.train.interactions.item, minlength=split.train.n_items)
    keys = [(k, e.user) for k, eps in test_eps.items() for e in eps]
    targets = np.array([e.candidates[0] for eps in test_eps.values() for e in eps], dtype=np.int64)
    strata = pd.Series(item_stratum(counts[targets], split.item_strata),
                       index=pd.MultiIndex.from_tuples(keys, names=["K", "user"]), name="N")
    rows = per_user.join(strata, on=["K", "user"])
    rows["user"] = list(zip(rows["K"], rows["user"], strict=True))  # one episode, one draw
    rows["K"] = rows.pop("N")
    return summarise(rows, n_bootstrap=n_bootstrap, seed=seed).rename(columns={"K": "N"})[columns]


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


def model_confidences(model: Recommender, eps: Sequence[Episode],
                      outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The model's ``confidence`` on each episode's outputs (what the stack's breaker reads)."""
    return np.array([model.confidence(e.context, o) for e, o in zip(eps, outputs, strict=True)],
                    dtype=np.float64)


def _stack_out_of_fold(stack: Any, specs: Mapping[str, Recommender], split: Split, protocol: str,
                       validator: SplitValidator, val_eps: list[Episode], outcomes: Mapping[str, tuple],
                       ks: tuple[int, ...], jobs: int, progress: bool) -> OutOfFold | None:
    """The out-of-fold episodes a learned stack is fitted on: its chosen members (the best on
    validation users, from the fits just made) refitted on folds of the training users."""
    if stack.stacker == "table":
        return None
    stack.set_task(protocol)
    keep = [i for i, e in enumerate(val_eps) if e.k in set(stack.validation_ks)]
    if not keep:
        return None
    outputs = {m: [outcomes[m][3]["val"][i] for i in keep] for m in stack.members}
    chosen = stack.choose_learned([val_eps[i] for i in keep], outputs)
    return out_of_fold({m: specs[m] for m in chosen}, split.train, validator, protocol, stack.folds,
                       stack.validation_ks, max(ks), stack.seed, jobs=jobs, progress=progress)


def _stack_from_outputs(name: str, stack: Any, split: Split, protocol: str, ks: tuple[int, ...],
                        test_eps: dict[int, list[Episode]], val_eps: list[Episode],
                        outcomes: Mapping[str, tuple], cutoffs: tuple[int, ...],
                        oof: OutOfFold | None = None) -> tuple[tuple, dict]:
    """Learn a stack from its members' validation outputs (and out-of-fold episodes) and score
    it from their test outputs (the same ``combine`` its own ``score`` runs, so the numbers are
    those of a fitted stack). Its fit seconds include the out-of-fold fits."""
    start = time.perf_counter()
    stack.set_task(protocol)
    keep = [i for i, e in enumerate(val_eps) if e.k in set(stack.validation_ks)]
    collected = {m: outcomes[m][3] for m in stack.members}
    stack.learn(split.train, [val_eps[i] for i in keep],
                {m: [c["val"][i] for i in keep] for m, c in collected.items()},
                {m: c["val_confidence"][keep] for m, c in collected.items()}, oof)
    fit_seconds = time.perf_counter() - start + (oof.seconds if oof is not None else 0.0)
    start = time.perf_counter()
    rates = protocol == "rating" and stack.predicts_ratings

    def answer() -> tuple[dict[int, list[np.ndarray]], dict[int, float]]:
        answers, trips = {}, {}
        for k in ks:
            answers[k], tripped = stack.combine_outputs(
                protocol, test_eps[k], {m: c["test"][k] for m, c in collected.items()},
                {m: c["test_confidence"][k] for m, c in collected.items()})
            trips[k] = float(np.mean(tripped)) if tripped else 0.0
        return answers, trips

    answers, trips = answer()
    rows_out, notes = _rows_and_notes(name, test_eps, answers, protocol, rates, cutoffs)
    # The learner validation did not choose is reported beside it, as "<stack>:<learner>".
    chosen = stack.learned.get(protocol, {}).get("kind")
    fitted_learners = stack.learned.get(protocol, {}).get("validation", {})
    for other in [k for k in fitted_learners if k != chosen]:
        with stack.answering_with(protocol, other):
            other_answers, _ = answer()
        rows, _ = _rows_and_notes(f"{name}:{other}", test_eps, other_answers, protocol, rates, cutoffs)
        rows_out += rows
    meta = {"members": list(stack.members), "table": stack.tables[protocol],
            "learned": {k: v for k, v in stack.learned.get(protocol, {}).items()
                        if k in ("kind", "members", "validation", "summary", "oof_episodes", "folds")},
            "item_weights": stack.item_weights[protocol], "item_bands": stack.item_bands,
            "trip_share": trips, "explain": stack.explain()}
    return (rows_out, (name, fit_seconds, time.perf_counter() - start), notes, {}), meta


@dataclass
class OutOfFold:
    """Members' outputs on training users scored by fits that never saw them: each fold's
    users as cold users at every K, by member copies fitted on the other folds."""

    episodes: list[Episode]
    outputs: dict[str, list[np.ndarray]]
    confidences: dict[str, np.ndarray]
    fold: np.ndarray
    """The fold of each episode's user (the fit that scored it left that fold out)."""
    seconds: float
    """Fit and score seconds of every fold job, added up."""
    item_counts: list[np.ndarray] = field(default_factory=list)
    """Each episode's items' training interactions in its fold's training data."""


def fold_episodes(split: Split, ks: Sequence[int], protocol: str, floor: int) -> list[Episode]:
    """Episodes of a split's validation part at every K, from users with more than
    max(K, ``floor``) interactions (like the validation episodes a stack learns from)."""
    return [e for k in ks for e in episodes(split, "val", k, protocol, max_k=max(k, floor))]


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

    def __call__(self, name: str, task: tuple[int, Recommender]) -> tuple[list[np.ndarray], np.ndarray, float]:
        fold, model = task
        split = user_folds(self.data, self.folds, seed=self.seed)[fold]
        eps = fold_episodes(split, self.ks, self.protocol, self.floor)
        start = time.perf_counter()
        model.set_task(self.protocol)
        model.fit(split.train, validate=self.validator)
        outputs = model_outputs(model, eps, self.protocol)
        return outputs, model_confidences(model, eps, outputs), time.perf_counter() - start


def out_of_fold(models: Mapping[str, Recommender], data: Dataset, validator: Any, protocol: str,
                folds: int, ks: Sequence[int], floor: int, seed: int, *, jobs: int = 1,
                progress: bool = False) -> OutOfFold:
    """Refit copies of the (unfitted) ``models`` on ``folds`` folds of ``data``'s users and score
    each fold's users at every K in ``ks``. Fits select settings on ``validator``'s users, as
    the full fits do; ``jobs > 1`` runs the fold fits in worker processes."""
    splits = user_folds(data, folds, seed=seed)
    job = _FoldJob(data, protocol, folds, tuple(ks), floor, seed, validator)
    tasks = {f"{name} fold {f + 1}/{folds}": (f, copy.deepcopy(model))
             for name, model in models.items() for f in range(folds)}
    results = _run_jobs(job, tasks, jobs, {}, f"stack: out-of-fold fits ({protocol})", progress)
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
                     np.asarray(fold_of, dtype=np.int64), float(sum(r[2] for r in results.values())), counts)


def _as_models(models: Mapping[str, Recommender] | Sequence[str] | Recommender,
               seed: int) -> dict[str, Recommender]:
    """Models by name are made here, seeded with the evaluation's seed."""
    from thaw.registry import make_model  # the registry imports every model: only when needed

    if isinstance(models, Recommender):
        return {models.name: models}
    if isinstance(models, Mapping):
        return dict(models)
    return {name: make_model(name, seed=seed) for name in models}


def summarise(per_user: pd.DataFrame, *, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean over users with a bootstrap 95% interval, one row per (model, K, metric)."""
    rows = []
    for (model, k, metric), group in per_user.groupby(["model", "K", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=np.float64)
        low, high = bootstrap_interval(values, n_resamples=n_bootstrap, seed=seed)
        rows.append((model, int(k), metric, float(np.nanmean(values)), low, high,
                     int(np.count_nonzero(~np.isnan(values)))))
    return pd.DataFrame(rows, columns=["model", "K", "metric", "value", "low", "high", "users"])


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error).

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1), the products are
    made non-decreasing in that order, and capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = scaled
    return adjusted


COMPARISON_COLUMNS = ["K", "metric", "model_a", "model_b", "better", "test", "users", "diff",
                      "p_value", "p_holm", "significant"]


def paired_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of per-user differences (1.0 when all are zero)."""
    diff = np.asarray(diff, dtype=np.float64)
    return 1.0 if np.allclose(diff, 0) else float(stats.wilcoxon(diff, zero_method="zsplit").pvalue)


def compare(per_user: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None,
            alpha: float = 0.05) -> pd.DataFrame:
    """Paired tests between models, for each K and metric, over the users both were scored on.

    Every pair of models is compared, or only ``pairs`` when given (a model absent from a K and
    metric, such as a ranking-only model for MAE, drops out of that family). Each row has the
    test (a two-sided Wilcoxon signed-rank test on the per-user differences), the number of
    users, the mean difference ``model_a - model_b``, which of the two is better, the raw p
    and the Holm-corrected p. The correction is over the pairs compared within one (K,
    metric) family, and ``significant`` uses the corrected p. Without ``pairs``, model_a is the
    better-ranked of the two by mean, so the rows whose model_a is the family's best come first.
    """
    if pairs is not None:
        pairs = [(str(a), str(b)) for a, b in pairs]
        known = set(per_user["model"])
        unknown = sorted({m for pair in pairs for m in pair} - known)
        if unknown:
            raise ThawError(f"cannot compare {', '.join(unknown)}: not among the evaluated models "
                            f"({', '.join(dict.fromkeys(per_user['model']))})")
        if any(a == b for a, b in pairs):
            raise ThawError("a comparison needs two different models")
    frames = []
    for (k, metric), group in per_user.groupby(["K", "metric"], sort=False):
        wide = group.pivot_table(index="user", columns="model", values="value", sort=False)
        lower = metric in LOWER_IS_BETTER
        means = wide.mean().sort_values(ascending=lower, kind="stable")
        if pairs is None:
            family = list(combinations(means.index, 2))
        else:
            family = [(a, b) for a, b in dict.fromkeys(pairs) if a in wide and b in wide]
        rows = []
        values = {m: wide[m].to_numpy(dtype=np.float64) for m in wide.columns}
        for a, b in family:
            both = ~(np.isnan(values[a]) | np.isnan(values[b]))
            if both.sum() < 2:
                continue
            diff = values[a][both] - values[b][both]
            p = paired_p(diff)
            mean_diff = float(diff.mean())
            better = a if (mean_diff < 0 if lower else mean_diff > 0) else b if mean_diff else ""
            rows.append([int(k), metric, a, b, better, "wilcoxon", int(both.sum()), mean_diff, p])
        if rows:
            frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-2])
            frame["p_holm"] = holm(frame["p_value"].to_numpy())
            frame["significant"] = frame["p_holm"] < alpha
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def degenerate_results(per_user: pd.DataFrame) -> list[str]:
    """Warnings for results that have fooled public toolkits."""
    notes = []
    for (model, k, metric), group in per_user.groupby(["model", "K", "metric"], sort=False):
        if metric in LOWER_IS_BETTER:
            continue
        values = group["value"].to_numpy()
        if len(values) > 1 and np.all(values == 1.0):
            notes.append(f"{model}: {metric} is 1.0 for every user at K={k}; check for leakage "
                         "or a candidate set the target always wins")
    vectors = {m: g.sort_values(["K", "metric", "user"])["value"].to_numpy()
               for m, g in per_user.groupby("model", sort=False)}
    for a, b in combinations(vectors, 2):
        if vectors[a].shape == vectors[b].shape and np.array_equal(vectors[a], vectors[b],
                                                                   equal_nan=True):
            notes.append(f"{a} and {b} give identical numbers for every user and metric; "
                         "is one a copy of the other?")
    return notes
