"""MetaTL (Wang et al., SIGIR 2021): meta transitional learning for cold-start sequences.

A user is the way they move between items. From a few transition pairs (i_h -> i_t) the
model reads a transition vector, t = sigmoid(W [e_h || e_t] + b), averages it over the pairs
(tr), and scores a candidate next item p after the last item o by the translation distance,
-||e_o + tr - e_p||. Training is a margin loss with sampled negative tails. The MAML step of
the paper adapts the transition layer (W, b) to each user's support pairs through thaw's one
engine (thaw/meta/maml.py); the item embeddings are shared. ``metatl-nomaml`` is the paper's
MetaTL--: the same model trained and used without that step.

Tasks mimic a cold user with K interactions: K items (K - 1 pairs) form the support, the pair
from the K-th item to the next is the query. Like the authors' sampler, half the tasks take K+1
consecutive items and half a random ordered subset of the user's items. One model serves every
K, so K is drawn per task (0..max_support). Two learned vectors cover what the paper leaves
undefined: ``prior`` is tr when there is no pair (K <= 1), and an extra "origin" item is the
last item when there is none (K = 0). Items never seen in training score -inf: their
embeddings are untrained noise (the scoring path of thaw/models/neural.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn

from thaw.compute import one_thread
from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import by_user, chronological_order
from thaw.meta.maml import MAML, MetaTrainer
from thaw.models.base import Context, Recommender, Validator, train_epochs
from thaw.models.neural import TaskBatch, chunked, exact_scores, float64_copy, share_of, stack_rows
from thaw.models.sampling import pair_keys, sample_unseen, sample_unseen_by


class TransitionNet(nn.Module):
    """Item embeddings, the transition layer and the translation score.

    One task's inputs: the support pairs (``pair_head``, ``pair_tail``, ``pair_mask``, shape
    (P,)) that define tr, and rows to score: ``head`` (R,), ``tail`` (R,), ``negative`` (R, N).
    The output is (R, 1 + N): minus the translation distance of the true tail, then of each
    negative. Item id ``n_items`` is the origin used when a user has no item yet.
    """

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim)
        nn.init.xavier_uniform_(self.items.weight)
        self.transition = nn.Linear(2 * dim, dim)
        self.prior = nn.Parameter(torch.full((dim,), 0.5))
        # Added to every tr. Adapting it alone (``adapt=("shift",)``) is the authors' code's
        # step on the relation vector itself, an option beside the paper's step on the
        # transition layer (the default).
        self.shift = nn.Parameter(torch.zeros(dim))

    def transitions(self, heads: Tensor, tails: Tensor) -> Tensor:
        """Equation 1: t = sigmoid(W [e_h || e_t] + b), one row per pair."""
        pairs = torch.cat([self.items(heads), self.items(tails)], dim=-1)
        return torch.sigmoid(self.transition(pairs))

    def relation(self, x: dict[str, Tensor]) -> Tensor:
        """Equation 2: the mean transition over the support pairs, or ``prior`` if none."""
        mask = x["pair_mask"].unsqueeze(-1)
        count = mask.sum(-2)
        mean = (self.transitions(x["pair_head"], x["pair_tail"]) * mask).sum(-2) / count.clamp_min(1.0)
        has_pairs = (count > 0).to(mean.dtype)
        return has_pairs * mean + (1.0 - has_pairs) * self.prior + self.shift

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        tr = self.relation(x)
        moved = (self.items(x["head"]) + tr).unsqueeze(-2)          # (R, 1, d)
        tails = torch.cat([x["tail"].unsqueeze(-1), x["negative"]], dim=-1)
        return -torch.linalg.vector_norm(moved - self.items(tails), dim=-1)


def margin_loss(margin: float):
    """Equation 3: [margin + s(pos) - s(neg)]+ over every (row, negative), masked rows out."""

    def loss(scores: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        hinge = torch.relu(margin - scores[..., :1] + scores[..., 1:]).mean(-1)
        return (hinge * mask).sum() / mask.sum().clamp_min(1.0)

    return loss


class MetaTL(Recommender):
    """MetaTL with the MAML step (``maml=True``) or without it (MetaTL--)."""

    predicts_ratings = False
    scores_new_items = False  # an item never in a training transition scores -inf
    _transient = ("engine", "_scorer")  # re-created by _rebuild / on first use

    def __init__(self, *, maml: bool = True, dim: int = 64, margin: float = 1.0,
                 inner_steps: int = 1, inner_lr: float = 0.5, first_order: bool = True,
                 adapt: tuple[str, ...] = ("transition.",), max_support: int = 10,
                 n_negatives: int = 4, consecutive: float = 0.5, epochs: int = 8,
                 tasks_per_user: int = 32, batch_size: int = 256, lr: float = 1e-2,
                 patience: int = 2, seed: int = 0, progress: bool = False) -> None:
        if max_support < 2:
            raise ValueError("max_support must be at least 2 (one transition pair)")
        self.use_maml, self.dim, self.margin, self.adapt = maml, dim, margin, tuple(adapt)
        self.inner_steps, self.inner_lr, self.first_order = inner_steps, inner_lr, first_order
        self.max_support, self.n_negatives, self.consecutive = max_support, n_negatives, consecutive
        self.epochs, self.tasks_per_user, self.batch_size = epochs, tasks_per_user, batch_size
        self.lr, self.patience, self.seed, self.progress = lr, patience, seed, progress

    @property
    def max_pairs(self) -> int:
        return self.max_support - 1

    # --- fitting -------------------------------------------------------------------------

    def _train_step(self, trainer: MetaTrainer, batch: TaskBatch) -> float:
        """One outer step on this rank's share of the batch (all of it in one process)."""
        part, weight = share_of(batch)
        return trainer.step(None if part is None else self.engine.task_losses(part).mean(), weight)

    @one_thread()
    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.n_items = data.n_items
        self.known = np.zeros(data.n_items, dtype=bool)  # items seen in training
        self.known[data.interactions.item] = True
        inter = data.interactions.take(chronological_order(data.interactions, self.seed))
        tasks = TransitionTasks(inter, data.n_items, self.max_support, self.n_negatives,
                                self.consecutive)
        self._rebuild()
        trainer = MetaTrainer(self.engine, lr=self.lr)

        def train_epoch() -> float:
            order = rng.permutation(np.repeat(np.arange(tasks.n_users), self.tasks_per_user))
            losses = [self._train_step(trainer, tasks.sample(order[start:start + self.batch_size], rng))
                      for start in range(0, len(order), self.batch_size)]
            self._scorer = None  # the weights moved
            return float(np.mean(losses))

        self.history = train_epochs(self, validate, epochs=self.epochs, patience=self.patience,
                                    train_epoch=train_epoch, net=self.net, progress=self.progress)
        self._scorer = None
        self.epochs_run = len(self.history)
        return self

    def _rebuild(self) -> None:
        """The network (initialised) and its engine, for ``n_items`` items."""
        if getattr(self, "n_items", None) is None:  # never fitted
            return
        self.net = TransitionNet(self.n_items, self.dim)
        self.engine = MAML(self.net, margin_loss(self.margin), adapt=lambda n: n.startswith(self.adapt),
                           inner_steps=self.inner_steps if self.use_maml else 0,
                           inner_lr=self.inner_lr, first_order=self.first_order)

    def _rows(self, items: np.ndarray, target: int | None, seen: np.ndarray,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One task's inputs. ``target=None``: the rows are the support pairs themselves;
        otherwise one row, from the last support item (or the origin) to ``target``."""
        items = np.asarray(items, dtype=np.int64)[-self.max_support:]
        heads, tails = items[:-1], items[1:]
        n_pairs = len(heads)
        pair_mask = (np.arange(self.max_pairs) < n_pairs).astype(np.float32)
        pair_head = _fill(heads, self.max_pairs)
        pair_tail = _fill(tails, self.max_pairs)
        if target is None:
            head, tail, mask = pair_head, pair_tail, pair_mask
        else:
            origin = items[-1] if len(items) else self.n_items
            head, tail, mask = np.array([origin]), np.array([target]), np.ones(1, dtype=np.float32)
        negative = sample_unseen(self.n_items, seen, len(head) * self.n_negatives, rng)
        return {"pair_head": pair_head, "pair_tail": pair_tail, "pair_mask": pair_mask,
                "head": head, "tail": tail, "negative": negative.reshape(len(head), self.n_negatives),
                "target": np.zeros(len(head), dtype=np.float32), "mask": mask}

    # --- scoring -------------------------------------------------------------------------

    @one_thread()
    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = chunked(self._chunk_outputs, contexts, items)
        return [exact_scores(v, i, self.known) for v, i in zip(outputs, items, strict=True)]

    def _chunk_outputs(self, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        """Float64 scores of one chunk of users: the transition layer adapted to each one's
        support pairs, then every candidate's translation distance from the last item."""
        supports = []
        for c in contexts:
            # Negatives for the support loss are drawn from a generator seeded by the
            # support itself, so a user's scores never depend on who else is in the batch.
            rng = np.random.default_rng([self.seed, len(c.history), *c.history.item.tolist()])
            supports.append(self._rows(c.history.item, None, c.history.item, rng))
        engine = self._scoring_engine()
        fast = engine.adapted(stack_rows(supports)) if self.use_maml else {
            k: v.detach().expand(len(contexts), *v.shape) for k, v in engine.split_params()[0].items()}
        width = max(len(i) for i in items)
        rows = []
        for support, c, i in zip(supports, contexts, items, strict=True):
            last = c.history.item[-1] if len(c.history) else self.n_items
            rows.append({**{k: support[k] for k in ("pair_head", "pair_tail", "pair_mask")},
                         "head": np.full(width, last), "tail": _fill(i, width),
                         "negative": np.zeros((width, 0), dtype=np.int64)})
        values = engine.predict(fast, stack_rows(rows))[..., 0].numpy()
        return [values[t, :len(i)] for t, i in enumerate(items)]

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.score_many([ctx], [items])[0]

    def _scoring_engine(self) -> MAML:
        """The engine over a float64 copy of the network, made once per trained state."""
        if getattr(self, "_scorer", None) is None:
            net = float64_copy(self.net)
            self._scorer = MAML(net, self.engine.loss, adapt=self.engine.fast_names,
                                inner_steps=self.engine.inner_steps, inner_lr=self.inner_lr,
                                first_order=self.first_order)
        return self._scorer


class TransitionTasks:
    """Meta-training tasks from warm users' sequences, sampled for a whole batch at once.

    A task: K in 0..max_support (bounded by the user's length - 1), then K + 1 of the user's
    items in order, either consecutive (probability ``consecutive``) or a random ordered subset.
    The first K are the support (K - 1 pairs), the last is the query's target. Negatives are
    items the user never touched.
    """

    def __init__(self, inter: Interactions, n_items: int, max_support: int, n_negatives: int,
                 consecutive: float) -> None:
        seqs = [s.item for s in by_user(inter).values() if len(s) >= 2]
        self.n_users, self.n_items = len(seqs), n_items
        self.lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        # At least max_support + 1 columns, so a window always fits (padding is never chosen).
        width = max(int(self.lengths.max(initial=0)), max_support + 1)
        self.items = np.zeros((len(seqs), width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            self.items[row, :len(seq)] = seq
        self.seen = pair_keys(np.repeat(np.arange(len(seqs)), self.lengths),
                              np.concatenate(seqs or [np.empty(0, np.int64)]), n_items)
        self.max_support, self.n_negatives, self.consecutive = max_support, n_negatives, consecutive

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> TaskBatch:
        b, width = len(rows), self.max_support + 1
        lengths = self.lengths[rows]
        k = (rng.random(b) * (np.minimum(self.max_support, lengths - 1) + 1)).astype(np.int64)
        cols = np.arange(width)
        # Consecutive windows: start + 0..k.
        start = (rng.random(b) * (lengths - k)).astype(np.int64)
        consecutive = start[:, None] + np.minimum(cols, k[:, None])
        # Ordered random subsets: the k + 1 positions with the smallest random keys, sorted.
        keys = rng.random((b, self.items.shape[1]))
        keys[np.arange(self.items.shape[1]) >= lengths[:, None]] = np.inf
        ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
        chosen = np.argsort(ranks > k[:, None], axis=1, kind="stable")[:, :width]
        subset = np.where(cols <= k[:, None], chosen, chosen[np.arange(b), k][:, None])
        positions = np.where((rng.random(b) < self.consecutive)[:, None], consecutive, subset)
        window = self.items[rows[:, None], positions]
        target = window[np.arange(b), k]
        pairs = self.max_support - 1
        pair_mask = (cols[:pairs] < (k - 1)[:, None]).astype(np.float32)
        pair_head, pair_tail = window[:, :pairs] * (pair_mask > 0), window[:, 1:pairs + 1] * (pair_mask > 0)
        origin = np.where(k > 0, window[np.arange(b), np.maximum(k - 1, 0)], self.n_items)
        common = {"pair_head": pair_head, "pair_tail": pair_tail, "pair_mask": pair_mask}
        support = {**common, "head": pair_head, "tail": pair_tail,
                   "negative": self._negatives(rows, (b, pairs), rng), "mask": pair_mask}
        query = {**common, "head": origin[:, None], "tail": target[:, None],
                 "negative": self._negatives(rows, (b, 1), rng), "mask": np.ones((b, 1), np.float32)}
        for part in (support, query):
            part["target"] = np.zeros_like(part["mask"])
        return TaskBatch(*({k: torch.as_tensor(v) for k, v in part.items()} for part in (support, query)))

    def _negatives(self, rows: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """(batch, rows, n_negatives) items each task's user never touched."""
        return sample_unseen_by(rows, (*shape, self.n_negatives), self.seen, self.n_items, rng)


def _fill(values: np.ndarray, size: int) -> np.ndarray:
    """Right-pad an id array with zeros to ``size`` (the mask says which entries are real)."""
    values = np.asarray(values, dtype=np.int64)
    return np.pad(values, (0, size - len(values)))


class MetaTLModel(MetaTL):
    """MetaTL: translation-based transitions, transition layer adapted per user (MAML)."""

    name = "metatl"


class MetaTLNoMAML(MetaTL):
    """MetaTL-- (the paper's ablation): the same model without the MAML step."""

    name = "metatl-nomaml"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"maml": False, **kwargs})
