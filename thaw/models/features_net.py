"""The feature network and the models built on it, trained the ordinary way.

One network: embeddings of the user's profile fields and of the item's genres and release
year (plus an identity embedding for items seen in training), then a decision MLP. Items enter
through their features, so a new item is scored like an old one. ``FeatureModel`` trains it on
warm users' rows and scores a cold user from their profile alone; Wide & Deep and DeepFM
(thaw/models/widedeep.py) change only the network, and the meta-learners of thaw/meta add
adaptation to the cold user's support.

Rows come from tasks: one user's first K interactions (K random) as the support, later ones
as the query. ``rating`` rows carry the rating as target (MSE); ``implicit`` rows are the
user's items with target 1 plus sampled items they never touched with target 0 (BCE), which
is what ranking the next item needs. A model trained the ordinary way uses every support and
query row as an example, so it sees the same data as the meta-learners and a comparison with
them isolates adaptation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn

from thaw.compute import one_thread, trained_on
from thaw.data.features import FeatureSpace
from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import by_user, chronological_order
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender, Validator, train_epochs
from thaw.models.neural import (
    LossFn,
    Rows,
    TaskBatch,
    Trainer,
    chunked,
    inputs,
    masked_bce,
    masked_mse,
    pad,
    pad_and_stack,
    share_of,
    stack_rows,
)
from thaw.models.sampling import sample_unseen

OBJECTIVES = ("rating", "implicit")


class FeatureNet(nn.Module):
    """Profile and item-feature embeddings followed by a decision MLP with one output."""

    def __init__(self, space: FeatureSpace, dim: int = 16, hidden: tuple[int, ...] = (64, 64),
                 item_ids: bool = True) -> None:
        super().__init__()
        self.user_fields = nn.ModuleList(nn.Embedding(c, dim) for c in space.cardinalities)
        self.genre = nn.Linear(space.n_genres, dim, bias=False)
        self.year = nn.Embedding(space.n_years, dim)
        # Identity of items seen in training; code 0 (all new items) is trained on nothing
        # and kept at zero, so new items are scored through their features alone.
        self.item = nn.Embedding(len(space.item_code) + 1, dim, padding_idx=0) if item_ids else None
        width = dim * (len(space.cardinalities) + 2 + int(item_ids))
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.decision = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)

    def fields(self, x: dict[str, Tensor]) -> list[Tensor]:
        """One embedding per feature field: each profile field, genres, year, item identity."""
        return [*self.user_embeddings(x["user"]), *self.item_fields(x)]

    def user_embeddings(self, codes: Tensor) -> list[Tensor]:
        return [emb(codes[..., i]) for i, emb in enumerate(self.user_fields)]

    def item_fields(self, x: dict[str, Tensor]) -> list[Tensor]:
        """The item's field embeddings: genres, year, item identity."""
        genres = x["genres"] / x["genres"].sum(-1, keepdim=True).clamp_min(1.0)
        parts = [self.genre(genres), self.year(x["year"])]
        if self.item is not None:
            parts.append(self.item(x["item"]))
        return parts

    def embed(self, x: dict[str, Tensor]) -> Tensor:
        return torch.cat(self.fields(x), dim=-1)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        return self.out(self.decision(self.embed(x))).squeeze(-1)

    # --- one user against many items: ``forward`` with the item side computed once ----------

    def _first_layer(self) -> tuple[nn.Linear, nn.Module]:
        """The first linear layer over the embeddings, and what follows it up to the output."""
        if len(self.decision):
            return self.decision[0], nn.Sequential(*self.decision[1:], self.out)
        return self.out, nn.Identity()

    def item_side(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """What ``forward`` computes for these item rows whatever the user (their ``user`` codes
        are not read): the first layer's share from the item's embeddings, one row per item.
        The first layer is linear over [user fields; item fields], so it splits into this and
        a user term (``one_user``)."""
        first, _ = self._first_layer()
        user_width = self.user_width()
        return {"first": nn.functional.linear(torch.cat(self.item_fields(x), dim=-1), first.weight[:, user_width:])}

    def user_width(self) -> int:
        return sum(emb.embedding_dim for emb in self.user_fields)

    def one_user(self, codes: Tensor, side: dict[str, Tensor]) -> Tensor:
        """``forward`` for one user's profile ``codes`` against the rows of ``side``
        (``item_side``, possibly indexed): the same outputs up to float rounding."""
        first, rest = self._first_layer()
        user = self.user_embeddings(codes)
        own = nn.functional.linear(torch.cat(user, dim=-1), first.weight[:, :self.user_width()], first.bias)
        return rest(side["first"] + own).squeeze(-1) + self.one_user_extra(user, codes, side)

    def one_user_extra(self, user: list[Tensor], codes: Tensor, side: dict[str, Tensor]) -> Tensor | float:
        """What a subclass adds to the decision MLP's output in ``one_user`` (nothing here)."""
        return 0.0


# --- tasks -----------------------------------------------------------------------------------

class TaskBuilder:
    """Builds padded support/query batches from users' profiles and interactions."""

    def __init__(self, space: FeatureSpace, n_items: int, objective: str = "rating", *,
                 n_negatives: int = 4, max_support: int = 10, max_query: int = 20) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        self.space, self.n_items, self.objective = space, n_items, objective
        self.n_negatives, self.max_support, self.max_query = n_negatives, max_support, max_query

    def rows(self, user_codes: np.ndarray, items: np.ndarray, targets: np.ndarray) -> Rows:
        out = self.space.rows(user_codes, items)
        out["target"] = np.asarray(targets, dtype=np.float32)
        return out

    def labelled(self, user_codes: np.ndarray, inter: Interactions, exclude: np.ndarray,
                 rng: np.random.Generator) -> Rows:
        """Rows for some interactions: ratings as targets, or positives plus negatives."""
        if self.objective == "rating":
            return self.rows(user_codes, inter.item, inter.rating)
        negatives = sample_unseen(self.n_items, exclude, len(inter) * self.n_negatives, rng)
        items = np.concatenate([inter.item, negatives])
        targets = np.concatenate([np.ones(len(inter)), np.zeros(len(negatives))])
        return self.rows(user_codes, items, targets)

    @property
    def support_size(self) -> int:
        return self.max_support * (1 if self.objective == "rating" else 1 + self.n_negatives)

    @property
    def query_size(self) -> int:
        return self.max_query * (1 if self.objective == "rating" else 1 + self.n_negatives)

    def batch(self, tasks: Sequence[tuple[Rows, Rows]]) -> TaskBatch:
        """Stack tasks, padding supports and queries to fixed sizes with mask 0."""
        support = stack_rows([pad(s, self.support_size) for s, _ in tasks])
        query = stack_rows([pad(q, self.query_size) for _, q in tasks])
        return TaskBatch(support, query)


class TrainingTasks:
    """Training tasks from warm users: a random K in 1..max_support, query = later items."""

    def __init__(self, data: Dataset, builder: TaskBuilder, seed: int = 0) -> None:
        inter = data.interactions.take(chronological_order(data.interactions, seed))
        self.sequences = {u: s for u, s in by_user(inter).items() if len(s) >= 2}
        self.users = np.array(sorted(self.sequences), dtype=np.int64)
        self.builder = builder
        self.codes = builder.space.user_codes

    def sample(self, users: Sequence[int], rng: np.random.Generator) -> TaskBatch:
        tasks = []
        b = self.builder
        for user in users:
            seq = self.sequences[int(user)]
            k = int(rng.integers(1, min(b.max_support, len(seq) - 1) + 1))
            rest = np.arange(k, len(seq))
            if len(rest) > b.max_query:
                rest = np.sort(rng.choice(rest, b.max_query, replace=False))
            seen = seq.item
            support = b.labelled(self.codes[user], seq.take(slice(0, k)), seen, rng)
            query = b.labelled(self.codes[user], seq.take(rest), seen, rng)
            tasks.append((support, query))
        return b.batch(tasks)

    def epochs(self, n_epochs: int, batch_size: int, rng: np.random.Generator
               ) -> Iterator[tuple[int, TaskBatch]]:
        """Yield (epoch, TaskBatch) over shuffled warm users."""
        for epoch in range(n_epochs):
            order = rng.permutation(self.users)
            for start in range(0, len(order), batch_size):
                yield epoch, self.sample(order[start:start + batch_size], rng)


# --- the model -------------------------------------------------------------------------------

class FeatureModel(Recommender):
    """The feature network trained the ordinary way on warm users' rows; a cold user is scored
    from their profile, with no adaptation to their support.

    ``objective`` is "rating" (MSE on ratings; serves the rating protocol) or "implicit" (BCE
    on the user's items against sampled unseen ones; serves next-item ranking); ``set_task``
    picks it from the protocol. Epochs stop early on validation users. Subclasses choose the
    network (``network``) and what one training step does (``_train_step``).
    """

    scores_new_items = True  # items enter through their genres and year
    # re-created by _rebuild from self.data, or a cache (_item_side)
    _transient: tuple[str, ...] = ("space", "builder", "_item_side")

    def __init__(self, *, objective: str = "rating", epochs: int = 20, batch_size: int = 32,
                 lr: float = 5e-3, dim: int = 16, hidden: tuple[int, ...] = (64, 64),
                 n_negatives: int = 4, patience: int = 3, seed: int = 0,
                 progress: bool = False) -> None:
        self.objective, self.epochs, self.batch_size, self.lr = objective, epochs, batch_size, lr
        self.dim, self.hidden, self.n_negatives = dim, tuple(hidden), n_negatives
        self.patience, self.seed, self.progress = patience, seed, progress

    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        return self.objective == "rating"

    def set_task(self, protocol: str) -> None:
        self.objective = "rating" if protocol == "rating" else "implicit"

    def network(self, space: FeatureSpace) -> FeatureNet:
        return FeatureNet(space, self.dim, self.hidden)

    def loss(self) -> LossFn:
        return masked_mse if self.objective == "rating" else masked_bce

    # --- fitting -------------------------------------------------------------------------

    def _build(self, data: Dataset) -> None:
        torch.manual_seed(self.seed)
        self.data = data  # kept: a loaded model rebuilds its feature space from it
        self._rebuild()
        self.scale = data.rating_scale

    def _rebuild(self) -> None:
        """Feature space, network (initialised) and task builder of ``self.data``."""
        if getattr(self, "data", None) is None:  # never fitted
            return
        data = self.data
        self.space = FeatureSpace(data)
        self.n_items = data.n_items
        self.net = self.network(self.space)
        implicit = self.objective != "rating"
        # An implicit row set is (1 + n_negatives) times larger; fewer query positives keep a
        # step about as cheap as a rating step.
        self.builder = TaskBuilder(self.space, data.n_items, "implicit" if implicit else "rating",
                                   n_negatives=self.n_negatives, max_query=10 if implicit else 20)
        if self.objective == "rating" and len(data.interactions):
            with torch.no_grad():  # start from the mean rating, not from 0
                self.net.out.bias.fill_(float(data.interactions.rating.mean()))

    @one_thread()
    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        self._build(data)
        rng = np.random.default_rng(self.seed)
        tasks = TrainingTasks(data, self.builder, seed=self.seed)
        trainer = Trainer(self._outer_params(), lr=self.lr)

        def train_epoch() -> float:
            with trained_on(self._trained()) as device:
                return float(np.mean([self._train_step(trainer, batch.to(device))
                                      for _, batch in tasks.epochs(1, self.batch_size, rng)]))

        self.history = train_epochs(self, validate, epochs=self.epochs, patience=self.patience,
                                    net=self._trained(), train_epoch=train_epoch, progress=self.progress)
        return self

    def _trained(self) -> nn.Module:
        """Everything fitting moves, saved and restored as the best epoch's state."""
        return self.net

    def _outer_params(self) -> list[Tensor]:
        return list(self.net.parameters())

    def _train_step(self, trainer: Trainer, batch: TaskBatch) -> float:
        """Ordinary training: every support and query row of the batch is one example."""
        part, weight = share_of(batch, weigh="rows")
        if part is None:
            return trainer.step(None)
        rows = {k: torch.cat([part.support[k].flatten(0, 1), part.query[k].flatten(0, 1)])
                for k in part.support}
        return trainer.step(self.loss()(self.net(inputs(rows)), rows["target"], rows["mask"]), weight)

    # --- scoring -------------------------------------------------------------------------

    def _codes(self, ctx: Context) -> np.ndarray:
        return self.space.request_codes(ctx.user, ctx.profile)

    def _support_rows(self, ctx: Context) -> Rows:
        """The user's support as training rows (negatives drawn, seeded, for implicit)."""
        key = [self.seed, len(ctx.history), *ctx.history.item.tolist()]
        rng = np.random.default_rng(key)
        return self.builder.labelled(self._codes(ctx), ctx.history, ctx.history.item, rng)

    def _candidate_rows(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> dict[str, Tensor]:
        return pad_and_stack([{**self.space.rows(self._codes(c), i),
                               "target": np.zeros(len(i), dtype=np.float32)}
                              for c, i in zip(contexts, items, strict=True)])

    def _chunk_outputs(self, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        """The network's outputs for one chunk of contexts, each over its own candidates."""
        if len(contexts) == 1:
            return [self._one_user_outputs(contexts[0], items[0])]
        with torch.no_grad():
            values = self.net(inputs(self._candidate_rows(contexts, items))).numpy().astype(np.float64)
        return [values[t, :len(i)] for t, i in enumerate(items)]

    def _one_user_outputs(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        """One user's outputs by ``FeatureNet.one_user``: the network's item side of every
        item is computed once per trained state (the parameters' versions) and kept, so a
        request computes only the user's own terms (a profile is all a cold user brings)."""
        key = tuple(p._version for p in self.net.parameters())
        kept = getattr(self, "_item_side", None)
        if kept is None or kept[0] != key:
            every = np.arange(len(self.space.item_code))
            rows = self._candidate_rows([Context(None)], [every])
            with torch.no_grad():
                kept = self._item_side = (key, self.net.item_side({k: v[0] for k, v in inputs(rows).items()}))
        items = np.asarray(items, dtype=np.int64)
        side = kept[1]
        if not np.array_equal(items, np.arange(len(self.space.item_code))):  # else: every item, in order
            index = torch.as_tensor(np.ascontiguousarray(items))
            side = {k: v[index] for k, v in side.items()}
        with torch.no_grad():
            return self.net.one_user(torch.as_tensor(self._codes(ctx)), side).numpy().astype(np.float64)

    @one_thread()
    def _outputs(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return chunked(self._chunk_outputs, contexts, items)

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._outputs(contexts, items)

    def _support_fit(self, ctx: Context, support: dict[str, Tensor]) -> Tensor:
        """The outputs on the user's own support rows."""
        return self.net(inputs(support))[0]

    @one_thread()
    def confidence(self, ctx: Context, scores: np.ndarray) -> float:
        """Minus the loss on the user's support (after adapting to it, for a meta-learner): a
        user whose few interactions the model cannot explain is one it knows little about.
        No support, no confidence."""
        if len(ctx.history) == 0:
            return 0.0
        support = pad_and_stack([self._support_rows(ctx)])
        with torch.no_grad():
            fitted = self._support_fit(ctx, support)
            return -float(self.loss()(fitted, support["target"][0], support["mask"][0]))

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self._outputs([ctx], [items])[0]

    def predict_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.objective != "rating":
            raise ThawError(f"model '{self.name}' was fitted for ranking (implicit objective) and "
                            "does not predict ratings")
        return [np.clip(v, *self.scale) for v in self._outputs(contexts, items)]

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.predict_many([ctx], [items])[0]
