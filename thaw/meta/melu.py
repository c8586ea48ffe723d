"""MeLU (Lee et al., KDD 2019) and its family on thaw's features: maml, fomaml, finetune.

One network for all of them: embeddings of the user's profile fields and of the item's genres
and release year, then a decision MLP. MeLU meta-learns the whole network but adapts only the
decision layers per user; ``maml`` adapts everything; ``fomaml`` is its first-order version;
``finetune`` trains the same network the ordinary way and then fine-tunes the decision layers
on each cold user's support with MeLU's steps and learning rate, which asks whether meta-
learning beats plain pre-training plus fine-tuning. Items enter only through their features,
so new items are scored like old ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn

from thaw.compute import one_thread
from thaw.data.features import FeatureSpace
from thaw.data.schema import Dataset
from thaw.meta.maml import MAML, MetaTrainer, Params, TaskBatch, masked_bce, masked_mse
from thaw.meta.tasks import TaskBuilder, TrainingTasks, pad
from thaw.models.base import Context, Recommender, Validator, register, train_epochs

DECISION_LAYERS = ("decision.", "out.")
SCORE_CHUNK = 256  # users adapted at once at score time


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
        user = [emb(x["user"][..., i]) for i, emb in enumerate(self.user_fields)]
        genres = x["genres"] / x["genres"].sum(-1, keepdim=True).clamp_min(1.0)
        parts = [*user, self.genre(genres), self.year(x["year"])]
        if self.item is not None:
            parts.append(self.item(x["item"]))
        return parts

    def embed(self, x: dict[str, Tensor]) -> Tensor:
        return torch.cat(self.fields(x), dim=-1)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        return self.out(self.decision(self.embed(x))).squeeze(-1)


def is_decision_layer(name: str) -> bool:
    return name.startswith(DECISION_LAYERS)


class FeatureMetaLearner(Recommender):
    """Shared machinery: fit by meta-training (or plain training), score by adapting.

    ``objective`` is "rating" (MSE on ratings; serves the rating protocol) or "implicit"
    (BCE on the user's items against sampled unseen ones; serves next-item ranking).
    ``set_task`` picks it from the protocol. Epochs stop early on validation users.
    """

    meta = True
    _transient = ("space", "builder", "maml")  # re-created by _rebuild from the training data

    def __init__(self, *, objective: str = "rating", adapt_all: bool = False,
                 first_order: bool = False, inner_steps: int = 2, inner_lr: float = 0.05,
                 epochs: int = 20, batch_size: int = 32, lr: float = 5e-3, dim: int = 16,
                 hidden: tuple[int, ...] = (64, 64), n_negatives: int = 4, patience: int = 3,
                 seed: int = 0, progress: bool = False) -> None:
        self.objective, self.adapt_all, self.first_order = objective, adapt_all, first_order
        self.inner_steps, self.inner_lr, self.epochs = inner_steps, inner_lr, epochs
        self.batch_size, self.lr, self.dim, self.hidden = batch_size, lr, dim, tuple(hidden)
        self.n_negatives, self.patience, self.seed, self.progress = n_negatives, patience, seed, progress

    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        return self.objective == "rating"

    def set_task(self, protocol: str) -> None:
        self.objective = "rating" if protocol == "rating" else "implicit"

    # --- fitting -------------------------------------------------------------------------

    def _build(self, data: Dataset) -> None:
        torch.manual_seed(self.seed)
        self.data = data  # kept: a loaded model rebuilds its feature space from it
        self._rebuild()
        self.scale = data.rating_scale

    def _rebuild(self) -> None:
        """Feature space, network (initialised), task builder and engine of ``self.data``."""
        if getattr(self, "data", None) is None:  # never fitted
            return
        data = self.data
        self.space = FeatureSpace(data)
        self.n_items = data.n_items
        self.net = self.network(self.space)
        loss = masked_mse if self.objective == "rating" else masked_bce
        implicit = self.objective != "rating"
        # An implicit row set is (1 + n_negatives) times larger; fewer query positives keep a
        # step about as cheap as a rating step.
        self.builder = TaskBuilder(self.space, data.n_items, "implicit" if implicit else "rating",
                                   n_negatives=self.n_negatives, max_query=10 if implicit else 20)
        self.maml = MAML(self.net, loss, adapt=None if self.adapt_all else is_decision_layer,
                         inner_steps=self.inner_steps, inner_lr=self.inner_lr,
                         first_order=self.first_order)
        if self.objective == "rating" and len(data.interactions):
            with torch.no_grad():  # start from the mean rating, not from 0
                self.net.out.bias.fill_(float(data.interactions.rating.mean()))

    def network(self, space: FeatureSpace) -> FeatureNet:
        return FeatureNet(space, self.dim, self.hidden)

    @one_thread()
    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        self._build(data)
        rng = np.random.default_rng(self.seed)
        tasks = TrainingTasks(data, self.builder, seed=self.seed)
        trainer = MetaTrainer(self.maml, self._outer_params(), lr=self.lr)
        self.history = train_epochs(
            self, validate, epochs=self.epochs, patience=self.patience, net=self._trained(),
            train_epoch=lambda: float(np.mean([self._train_step(trainer, batch)
                                               for _, batch in tasks.epochs(1, self.batch_size, rng)])),
            progress=self.progress)
        return self

    def _trained(self) -> nn.Module:
        """Everything fitting moves, saved and restored as the best epoch's state."""
        return self.net

    def _outer_params(self) -> list[Tensor]:
        return list(self.net.parameters())

    def _train_step(self, trainer: MetaTrainer, batch: TaskBatch) -> float:
        if self.meta:
            return trainer.step(self.maml.task_losses(batch).mean())
        # Plain training: every support and query row of the batch is an ordinary example.
        fast, shared = self.maml.split_params()
        rows = {k: torch.cat([batch.support[k].flatten(0, 1), batch.query[k].flatten(0, 1)])
                for k in batch.support}
        return trainer.step(self.maml.batch_loss(fast, shared, rows))

    # --- scoring -------------------------------------------------------------------------

    def _support_rows(self, ctx: Context) -> dict[str, np.ndarray]:
        """The cold user's support as training rows (negatives drawn, seeded, for implicit)."""
        key = [self.seed, len(ctx.history), *ctx.history.item.tolist()]
        rng = np.random.default_rng(key)
        return self.builder.labelled(self._codes(ctx), ctx.history, ctx.history.item, rng)

    def _codes(self, ctx: Context) -> np.ndarray:
        if ctx.user is not None and not ctx.profile:
            return self.space.user_codes[ctx.user]
        return self.space.encode_profile(ctx.profile)

    def adapted_weights(self, contexts: Sequence[Context]) -> Params:
        """Fast weights per user, (T, ...): the initialisation adapted on each support."""
        return self.maml.adapted(self._padded([self._support_rows(c) for c in contexts]))

    @staticmethod
    def _padded(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, Tensor]:
        size = max(1, max(len(r["target"]) for r in rows))
        padded = [pad(r, size) for r in rows]
        return {k: torch.as_tensor(np.stack([p[k] for p in padded])) for k in padded[0]}

    @one_thread()
    def _outputs(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(contexts), SCORE_CHUNK):
            ctxs = contexts[start:start + SCORE_CHUNK]
            cands = items[start:start + SCORE_CHUNK]
            fast = self.adapted_weights(ctxs)
            rows = self._padded([{**self.space.rows(self._codes(c), i),
                                  "target": np.zeros(len(i), dtype=np.float32)}
                                 for c, i in zip(ctxs, cands, strict=True)])
            values = self.maml.predict(fast, rows).numpy().astype(np.float64)
            out += [values[t, :len(i)] for t, i in enumerate(cands)]
        return out

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._outputs(contexts, items)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self._outputs([ctx], [items])[0]

    def predict_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.objective != "rating":
            return super().predict_many(contexts, items)
        return [np.clip(v, *self.scale) for v in self._outputs(contexts, items)]

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.predict_many([ctx], [items])[0]


@register("melu")
class MeLU(FeatureMetaLearner):
    """MeLU: meta-learned network, decision layers adapted per user."""


@register("maml")
class FullMAML(FeatureMetaLearner):
    """MAML on the same network with every parameter adapted per user."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"adapt_all": True, **kwargs})


@register("fomaml")
class FirstOrderMAML(FeatureMetaLearner):
    """First-order MAML: like ``maml`` but the inner gradients are constants."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"adapt_all": True, "first_order": True, **kwargs})


@register("finetune")
class FineTune(FeatureMetaLearner):
    """The MeLU network trained normally on warm users, fine-tuned per cold user like MeLU."""

    meta = False
