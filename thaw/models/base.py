"""The contract every method in thaw fulfils (the registry that names them: thaw/registry.py).

Every method answers one question: given what we know about this user right now (a Context),
how much will they like each of these items? A model is fitted once on warm users; a cold user
arrives at score time with K support interactions in ``ctx.history``. Because of this the
evaluation protocol, the router and the service need no special case per method. A model made
of other models (the stack) learns from what they answer through ``LearnsFromOutputs`` (at the
end), so the evaluation can hand it outputs it has already without knowing the stack.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from thaw import distributed
from thaw.data.schema import Dataset, Interactions
from thaw.errors import ThawError


@dataclass(frozen=True)
class Context:
    """What is known about one user at request time."""

    user: int | None
    """Internal id of a user seen in training, or None for a user never seen in training."""
    history: Interactions = field(default_factory=Interactions.empty)
    """Chronological (item, rating, ts) support; may be empty."""
    profile: Mapping[str, Any] = field(default_factory=dict)
    """Side features (age, gender, occupation, ...); may be empty."""
    source: Interactions | None = None
    """History in another domain, for cross-domain transfer."""

    def __post_init__(self) -> None:
        user = self.user
        if user is not None and (isinstance(user, bool) or not isinstance(user, numbers.Integral) or user < 0):
            raise ThawError(f"Context.user is a training user's internal index (0 or more) or None for a "
                            f"user unseen in training, got {user!r}")
        for name in ("history", "source"):
            value = getattr(self, name)
            if not isinstance(value, Interactions) and (name == "history" or value is not None):
                raise ThawError(f"Context.{name} must be Interactions (Interactions.of(items, ratings); "
                                f"Interactions.empty() for none), got {type(value).__name__}")
        if not isinstance(self.profile, Mapping):
            raise ThawError(f"Context.profile must be a mapping of field to value (empty: {{}}), got "
                            f"{type(self.profile).__name__}")


@dataclass(frozen=True)
class Episode:
    """One held-out user at one K: what the model is told, what it must rank, the truth (the
    evaluation makes them, thaw/eval/episodes.py; a model that learns from other models'
    outputs learns from these)."""

    user: int
    k: int
    context: Context
    candidates: np.ndarray
    """next-item: the target first, then the negatives; rating: the query items."""
    truth: np.ndarray
    """rating protocol: the query's true ratings; next-item: empty."""


class Validator(Protocol):
    """Scores a fitted model on validation users only (never test users): higher is better.

    A validator with nothing to validate on (no validation users, or none with enough
    interactions) says so with a true ``empty`` attribute and a ``reason``; models then fit as
    they would without one (see ``usable_validator``). A NaN value from a validator that is not
    empty is an error (see ``validation_score``)."""

    def __call__(self, model: Recommender) -> float: ...


class ModelSelectionSkipped(UserWarning):
    """The validator had nothing to validate on: models were fitted without model selection."""


def selection_skipped_message(validate: Any) -> str:
    reason = getattr(validate, "reason", None) or "the validator has no validation episodes"
    return (f"model selection skipped: {reason}; models train for their full epochs with their "
            "default hyperparameters (no early stopping, no grid search) and a stack keeps its "
            "default routes")


def usable_validator(validate: Validator | None) -> Validator | None:
    """``validate``, or None when it is ``empty``: a model then fits exactly as without a
    validator (every epoch, default hyperparameters) instead of being stopped early and tuned
    by NaN. The ModelSelectionSkipped warning is given once per validator."""
    if validate is None or not getattr(validate, "empty", False):
        return validate
    if not getattr(validate, "warned", False):
        warnings.warn(selection_skipped_message(validate), ModelSelectionSkipped, stacklevel=3)
        with contextlib.suppress(AttributeError):
            validate.warned = True  # type: ignore[attr-defined]
    return None


def validation_score(validate: Validator, model: Recommender, when: str) -> float:
    """One validation value; NaN from a validator that has users is a ThawError (the model's
    outputs on validation users are not numbers), never a silent stop or a silent choice."""
    value = float(validate(model))
    if np.isnan(value):
        raise ThawError(f"model '{model.name}': the validation metric is NaN {when}; its "
                        "outputs on validation users are not numbers (diverged?)")
    return value


def choose_on_validation(model: Recommender, validate: Validator, attr: str, grid: Sequence[Any],
                         what: str) -> dict[Any, float]:
    """Set ``model.<attr>`` to each value of ``grid`` in turn, score it on validation users,
    and leave the best there (the first on ties): the one search of every setting that acts
    at score time, so no refit. Returns every value's score."""
    scores = {}
    for value in grid:
        setattr(model, attr, value)
        scores[value] = validation_score(validate, model, f"with {what} {value}")
    setattr(model, attr, max(scores, key=scores.get))
    return scores


class Recommender:
    """Base class: subclasses implement ``fit`` and ``score``, and ``predict`` if they can.

    ``score`` ranks (higher = better); ``predict`` returns ratings on the data set's scale
    and is what the rating protocol's MAE and RMSE use.
    """

    name: str = "recommender"
    """The model's name in thaw's registry (thaw/registry.py); every registered class sets its own."""
    predicts_ratings: bool = False
    scores_new_items: bool = False
    """It gives an item no training interaction touched a finite score (from the item's content
    or features, or a prior all such items share); a fact about its score path, so inherited."""
    needs_source: bool = False
    """It fits only on a cross-domain pair: what it learns is a transfer from the source domain."""
    main_job_item_cold: bool = False
    """``thaw run`` fits it on the new-item and both-cold splits too (only a model that
    ``scores_new_items``). A choice for the job's time, not a fact: never inherited, so an
    ablation or any other subclass runs there only if its own class says so."""
    chosen_from: Mapping[str, str] = {}
    """Settings that ``fit`` chooses on validation users, each with the constructor parameter
    that holds its candidates (mf: ``{"reg": "grid"}``). Given a validator and two or more
    candidates, the setting's own value is replaced by the best of them; with one candidate it
    is kept. The command line reads this to honour a setting given alone (a one-value grid)."""
    counting_params: frozenset[str] = frozenset({
        "dim", "hidden", "text_dim", "attention_dim", "iterations", "epochs", "batch_size",
        "check_every", "steps_per_epoch", "tasks_per_user", "neighbours", "n_inits", "n_folds",
        "folds", "n_blocks", "n_heads", "n_groups", "max_len", "max_support", "max_query",
        "max_history", "max_cut", "max_items", "max_blend", "targets"})
    """Integer settings that count something the model cannot do without (a dimension, an
    epoch, a layer), so they must be at least 1 wherever a model has them; every other number
    a model takes may be 0 (and none may be negative or NaN)."""
    _transient: tuple[str, ...] = ()
    """Attributes ``thaw.save`` leaves out (caches, objects ``_rebuild`` re-creates); they load as None."""
    fitted_on: tuple[int, int] | None = None
    """(users, items) of the data set the last ``fit`` saw; None before any fit. ``score`` and
    ``predict`` refuse a user or item index outside it (a service that adds items after the
    fit moves it on)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every model's own ``fit`` records ``fitted_on``, and its own ``score``, ``predict``
        and their batch forms check the request first (``check_request``). A class that does
        not set ``main_job_item_cold`` itself gets False, whatever its base says."""
        super().__init_subclass__(**kwargs)
        if "main_job_item_cold" not in vars(cls):
            cls.main_job_item_cold = False
        for name in ("fit", "score", "predict", "score_many", "predict_many"):
            method = vars(cls).get(name)
            if callable(method) and not getattr(method, "checked_by_thaw", False):
                setattr(cls, name, _recording_fit(method) if name == "fit" else
                        _checked(method, many=name.endswith("_many")))

    def check_request(self, ctx: Context, items: Any) -> None:
        """A ThawError for what would otherwise wrap around or fail deep inside the model: a
        context that is not a Context, or an index (of ``items``, the history's items or the
        user) below 0 or past the data set the model was fitted on."""
        if not isinstance(ctx, Context):
            raise ThawError(f"model '{self.name}' scores a Context (the user) and an array of item "
                            f"indices, got {type(ctx).__name__} for the context")
        n_users, n_items = self.fitted_on or (None, None)
        for what, values in (("item", items), ("history item", ctx.history.item)):
            values = np.asarray(values)
            if values.size == 0 or values.dtype.kind not in "iuf":
                continue
            bad = values[(values < 0) | (values >= (np.inf if n_items is None else n_items))]
            if len(bad):
                known = "0 or more" if n_items is None else f"0 to {n_items - 1}"
                raise ThawError(f"model '{self.name}': {what} index {bad[0]:g} is not an item of its data "
                                f"set (internal indices {known}; Dataset.item_index maps raw ids to them)")
        if ctx.user is not None and n_users is not None and ctx.user >= n_users:
            raise ThawError(f"model '{self.name}': user index {ctx.user} is not a user of its data set "
                            f"(0 to {n_users - 1}); a user unseen in training is user=None")

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        raise NotImplementedError

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        raise ThawError(f"model '{self.name}' ranks items but does not predict ratings")

    def confidence(self, ctx: Context, scores: np.ndarray) -> float:
        """How sure the model is about one request, higher = surer; only compared with the same
        model's confidence on other requests (the stack's circuit breaker calibrates a threshold
        per model). Default: the spread of its scores; a model that scores every item alike
        knows nothing about this user. Infinite scores (-inf: "never") are left out."""
        scores = np.asarray(scores, dtype=np.float64)
        finite = scores[np.isfinite(scores)]
        return float(finite.std()) if len(finite) > 1 else 0.0

    def set_task(self, protocol: str) -> None:
        """Called before fit with the protocol ("next-item" or "rating"); models whose training
        objective depends on it (ranking vs rating regression) switch here. Default: nothing."""

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Batch version of ``score``; subclasses may vectorise it but must give the same numbers."""
        return [self.score(c, i) for c, i in zip(contexts, items, strict=True)]

    def predict_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Batch version of ``predict``, same contract as ``score_many``."""
        return [self.predict(c, i) for c, i in zip(contexts, items, strict=True)]

    def _rebuild(self) -> None:
        """Re-create what is not data (torch modules, engines, feature spaces) from the restored
        attributes; ``thaw.load`` calls it with every saved attribute back and the ``_transient``
        ones set to None, then loads the saved weights into the modules it made. It is also
        called on a model saved unfitted, so it must do nothing when what it needs is absent.
        Default: nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _recording_fit(fit: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fit)
    def recorded(self: Recommender, data: Dataset, *args: Any, **kwargs: Any) -> Any:
        before = self.fitted_on
        self.fitted_on = (int(data.n_users), int(data.n_items))  # fit validates on this data
        try:
            return fit(self, data, *args, **kwargs)
        except BaseException:
            self.fitted_on = before
            raise

    recorded.checked_by_thaw = True  # type: ignore[attr-defined]
    return recorded


def _checked(method: Callable[..., Any], many: bool = False) -> Callable[..., Any]:
    """``method`` (score or predict; with ``many``, their batch forms) after ``check_request``
    on each context, and a ThawError instead of the AttributeError of a model never fitted."""
    @functools.wraps(method)
    def checked(self: Recommender, ctx: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
        for one, these in (zip(ctx, items, strict=False) if many else [(ctx, items)]):
            self.check_request(one, these)
        try:
            return method(self, ctx, items, *args, **kwargs)
        except AttributeError:
            if self.fitted_on is None:  # what it reached for is made by fit
                raise ThawError(f"model '{self.name}' is not fitted: call fit(data) before "
                                f"{method.__name__} (or thaw.load a fitted one)") from None
            raise

    checked.checked_by_thaw = True  # type: ignore[attr-defined]
    return checked


class EarlyStopping:
    """Keeps the state of the best validation epoch and says when to stop: after ``patience``
    epochs without improvement. NaN is a ThawError: it can neither improve nor be waited out."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.stale = patience, -np.inf, 0
        self.best_state: Any = None

    def update(self, value: float, snapshot: Callable[[], Any]) -> bool:
        """Record one epoch's validation value (``snapshot()`` is called only on a new best);
        True when training should stop."""
        if np.isnan(value):
            raise ThawError("the validation metric is NaN; early stopping cannot choose an epoch")
        if value > self.best:
            self.best, self.stale, self.best_state = value, 0, snapshot()
        else:
            self.stale += 1
        return self.stale >= self.patience


def train_epochs(model: Recommender, validate: Validator | None, *, epochs: int, patience: int,
                 train_epoch: Callable[[], float], net: Any, progress: bool = False) -> list[dict[str, float]]:
    """The epoch loop of thaw's torch models: ``train_epoch()`` (returns the mean loss), then
    validation, early stopping, and at the end the best epoch's weights loaded into ``net``
    (any module holding everything fitting moves). An ``empty`` validator is no validator."""
    validate = usable_validator(validate)
    stopper = EarlyStopping(patience)
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=f"fit {model.name}", disable=not (progress and distributed.is_main()),
               leave=False)
    for epoch in bar:
        record = {"epoch": epoch + 1, "loss": float(train_epoch())}
        stop = False
        if validate is not None:
            # every rank validates the same weights; rank 0's number decides, so no rank can
            # stop an epoch before the others and leave them waiting in a collective
            value = distributed.from_main(validation_score(validate, model, f"at epoch {epoch + 1}"))
            record["validation"] = value
            stop = stopper.update(value, lambda: copy.deepcopy(net.state_dict()))
        history.append(record)
        bar.set_postfix(record)
        if stop:
            break
    if stopper.best_state is not None:
        net.load_state_dict(stopper.best_state)
    if distributed.debug():  # THAW_DIST_DEBUG=1: every rank ends with the same weights
        distributed.assert_in_step(net.parameters(), f"{model.name} weights")
    return history


def kept_epoch(model: Recommender) -> int | None:
    """The epoch whose weights ``train_epochs`` kept on validation (the first best), or None
    for a model not fitted that way or fitted without validation."""
    scored = [r for r in getattr(model, "history", None) or () if "validation" in r]
    if not scored:
        return None
    return int(max(scored, key=lambda r: (r["validation"], -r["epoch"]))["epoch"])


def normalise(scores: np.ndarray) -> np.ndarray:
    """Z-scores over one request's candidates, so answers on different scales can be blended
    (the stack's members, a seed ensemble's copies).
    A score of -inf (a sequence model's "never seen in training") stays below every other."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    z = np.zeros_like(scores)
    if finite.any():
        values = scores[finite]
        spread = values.std()
        z[finite] = (values - values.mean()) / spread if spread > 0 else 0.0
        z[~finite] = z[finite].min() - 1.0
    return z


def top_n(model: Recommender, ctx: Context, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of ``items`` for this user (items already in their history left out),
    best first, with their scores; fewer only when fewer items remain."""
    items = np.setdiff1d(np.asarray(items, dtype=np.int64), ctx.history.item)
    scores = np.asarray(model.score(ctx, items), dtype=np.float64)
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    order = np.lexsort((items, -scores))[:max(n, 0)]
    return items[order], scores[order]


# --- models learned from other models' outputs (the stack) ---------------------------------------

def model_outputs(model: Recommender, eps: Sequence[Episode], protocol: str) -> list[np.ndarray]:
    """What the protocol reads from a model for each episode: predicted ratings under the
    rating protocol (where the model predicts them), scores otherwise."""
    if not eps:
        return []
    rates = protocol == "rating" and model.predicts_ratings
    call = model.predict_many if rates else model.score_many
    outputs = call([e.context for e in eps], [e.candidates for e in eps])
    return [np.asarray(o, dtype=np.float64) for o in outputs]


def model_confidences(model: Recommender, eps: Sequence[Episode],
                      outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The model's ``confidence`` on each episode's outputs (what the stack's breaker reads)."""
    return np.array([model.confidence(e.context, o) for e, o in zip(eps, outputs, strict=True)],
                    dtype=np.float64)


@dataclass
class MemberOutputs:
    """What several models answered on the same episodes: per model, one output per episode
    (``model_outputs``) and one confidence per episode (``model_confidences``)."""

    episodes: list[Episode]
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    confidences: dict[str, np.ndarray] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    """The epoch each model's fit kept on validation (``kept_epoch``), for those that have one:
    what out-of-fold refits of it can be told to train for, so their outputs sit where the
    fit's do."""

    @classmethod
    def of(cls, models: Mapping[str, Recommender], episodes: Sequence[Episode], protocol: str) -> MemberOutputs:
        """Every model of ``models`` asked on ``episodes``."""
        out = cls(list(episodes))
        for name, model in models.items():
            out.outputs[name] = model_outputs(model, out.episodes, protocol)
            out.confidences[name] = model_confidences(model, out.episodes, out.outputs[name])
            if (epoch := kept_epoch(model)) is not None:
                out.epochs[name] = epoch
        return out

    def at(self, ks: Collection[int]) -> MemberOutputs:
        """Only the episodes at a K of ``ks``, with their outputs and confidences."""
        wanted = set(ks)
        keep = [i for i, e in enumerate(self.episodes) if e.k in wanted]
        return MemberOutputs([self.episodes[i] for i in keep],
                             {m: [o[i] for i in keep] for m, o in self.outputs.items()},
                             {m: c[keep] for m, c in self.confidences.items()}, dict(self.epochs))


@dataclass
class OutOfFold(MemberOutputs):
    """Members' outputs on training users scored by fits that never saw them: each fold's
    users as cold users at every K, by member copies fitted on the other folds."""

    fold: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The fold of each episode's user (the fit that scored it left that fold out)."""
    seconds: float = 0.0
    """Fit and score seconds of every fold job, added up."""
    item_counts: list[np.ndarray] = field(default_factory=list)
    """Each episode's items' training interactions in its fold's training data."""
    by: str = "users"
    """What the folds hold out: "users" (new users) or "items" (new items, known users)."""


@runtime_checkable
class EpisodeValidator(Validator, Protocol):
    """A validator that also hands out its episodes and refits models out of fold: what a
    model that learns from outputs needs to fit itself (thaw/eval's SplitValidator is one)."""

    def episodes_at(self, ks: Sequence[int]) -> list[Episode]:
        """Validation episodes at each K of ``ks``."""
        ...

    def out_of_fold(self, models: Mapping[str, Recommender], data: Dataset, protocol: str, folds: int,
                    ks: Sequence[int], seed: int, *, jobs: int = 1, progress: bool = False,
                    epochs: Mapping[str, int] | None = None) -> OutOfFold:
        """Copies of the unfitted ``models`` fitted on all folds but one of ``data``'s users
        (``folds`` of them; of its items where the validator's requests rank new items), each
        scoring its held-out fold at every K of ``ks``. ``epochs``: the epoch each model's full
        fit kept (``MemberOutputs.epochs``), which fold fits of items train for."""
        ...


class LearnsFromOutputs(ABC):
    """A model made of other models (its members) that learns from what they answer.

    Its own ``fit`` fits the members and asks them on the validator's episodes; an evaluation
    that fits the members anyway hands their outputs over instead, so no member is fitted
    twice: ``out_of_fold``, ``learn_from_outputs``, then ``answer_outputs`` on each test
    episode. The evaluation knows it by this contract alone (thaw/eval/protocol.py).
    """

    validation_ks: Sequence[int]
    """The K of the validation episodes it learns from (``EpisodeValidator.episodes_at``)."""

    @abstractmethod
    def member_names(self) -> list[str]:
        """The members whose outputs it learns from and answers with."""

    @abstractmethod
    def out_of_fold(self, data: Dataset, validate: EpisodeValidator, outputs: MemberOutputs,
                    unfitted: Mapping[str, Recommender], *, jobs: int = 1,
                    progress: bool = False) -> OutOfFold | None:
        """The out-of-fold outputs it learns from beside ``outputs`` (the members' on the
        validation episodes): members of ``unfitted`` it chooses, refitted by ``validate`` on
        folds of ``data``; None when it learns from validation episodes alone."""

    @abstractmethod
    def learn_from_outputs(self, data: Dataset, outputs: MemberOutputs, oof: OutOfFold | None = None) -> Self:
        """Learn from the members' ``outputs`` on validation episodes (and ``oof``), with the
        members already fitted on ``data``. Never sees a test user."""

    @abstractmethod
    def answer_outputs(self, task: str, outputs: MemberOutputs) -> tuple[list[np.ndarray], list[bool]]:
        """Its answer on each episode of ``outputs`` from the members' outputs there (the
        numbers its own ``score`` and ``predict`` give), and whether each fell back on its
        fallback."""

    def alternatives(self, task: str) -> list[str]:
        """Other fitted ways to answer ``task`` than the one validation chose, which an
        evaluation reports beside it (as "<name>:<alternative>"). Default: none."""
        return []

    def answering_with(self, task: str, alternative: str) -> contextlib.AbstractContextManager[None]:
        """A block in which it answers ``task`` the ``alternative`` way (one of
        ``alternatives``); a model that has alternatives implements it."""
        raise ThawError(f"{type(self).__name__} has no alternative '{alternative}' to answer {task} with")

    def learned_record(self, task: str) -> dict[str, Any]:
        """What an evaluation records of what it learned for ``task`` (plain data, for
        results.json and the report). Default: its members."""
        return {"members": self.member_names()}
