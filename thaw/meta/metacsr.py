"""metaCSR (Huang et al., "Learning to Learn a Cold-start Sequential Recommender", TOIS 2021).

Three parts. The *diffusion representer* (θ1) turns the warm users' user-item graph into one
unit-norm representation per item (Algorithm 1). The *sequential recommender* (θ2) reads the
last ``max_len`` items of a user as those representations, encodes them with forward and
backward masked self-attention (eqs 2-7) and maps the result to a preference vector s_u
(eq 8); an item's score is s_u · f_i (eq 9). The *meta learner* is thaw's MAML engine: θ2 is
adapted per user in the inner loop, θ1 and θ2 are moved by Adam in the outer loop (eqs 11-15).

The item table depends on θ1 only, so it is computed once per meta-batch from the live
parameters, outside the vectorised per-task computation, and the network reads it from
``net.table`` (see ``MetaCSRNet.reading``); the outer gradient reaches θ1 through it.

Deviations from the paper, and why:
- Eq 10's -log[p_j - p_j-] is undefined whenever p_j < p_j-; the loss is its well-defined
  pairwise form, BPR's -log sigmoid(x_j - x_j-), over ``n_negatives`` (4, not 100) sampled
  training items the user never touched, per positive.
- W4 and W5 map to ``attention_dim`` (16) rather than d: the paper gives no width, and the
  position term dominates eq 2 anyway (adjacent keys beat the next ones by e^2 - e = 4.7
  logits), while the (L, L, width) pair tensor is a large part of the fit time at width d.
- Meta-batches group tasks of similar support size (less padding computed); the batches come
  in random order. Outer Adam has no weight decay.
- A cold user adapts on its last max_len - 1 transitions, the most a training task has.
- Items never seen in training score -inf (their representations are arbitrary), as in
  thaw's other sequence models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thaw.compute import one_thread
from thaw.data.schema import Dataset
from thaw.data.splits import by_user, chronological_order
from thaw.meta.maml import MAML, MetaTrainer, Params
from thaw.models.base import Context, Recommender, Validator, train_epochs
from thaw.models.neural import (
    Rows,
    TaskBatch,
    chunked,
    exact_scores,
    float64_copy,
    pad,
    pad_and_stack,
    share_of,
    stack_rows,
)
from thaw.models.sampling import sample_unseen

SCORE_CHUNK = 64  # cold users adapted at once (each holds its own float64 copy of θ2)
FAST = "sequence."  # θ2: the parameters adapted per user


def position_masks(length: int) -> tuple[Tensor, Tensor]:
    """Eqs 3 and 4: M[m, n] = -exp(|m - n|) where key m precedes (fw) or follows (bw) the
    output position n, -inf elsewhere (the diagonal included)."""
    m = torch.arange(length)[:, None]
    n = torch.arange(length)[None, :]
    penalty = -torch.exp((m - n).abs().to(torch.get_default_dtype()))
    blocked = torch.full_like(penalty, float("-inf"))
    return torch.where(m < n, penalty, blocked), torch.where(m > n, penalty, blocked)


def mean_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> Tensor:
    """Sparse (n_rows, n_cols) matrix whose row r averages r's distinct neighbours; a row with
    no neighbour is all zero, so its aggregate h is 0."""
    keys = np.unique(rows.astype(np.int64) * n_cols + cols)
    r, c = keys // n_cols, keys % n_cols
    values = 1.0 / np.bincount(r, minlength=n_rows)[r]
    index = torch.as_tensor(np.stack([r, c]))
    return torch.sparse_coo_tensor(index, torch.as_tensor(values, dtype=torch.float32),
                                   (n_rows, n_cols), check_invariants=True).coalesce()


class Convolve(nn.Module):
    """Algorithm 1 for a whole side of the graph: f* = normalise(ReLU(W2 [f_in, f_la] + b2))
    with f_la = ReLU(W1 h + b1) and h the mean of the neighbours' representations."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.latent = nn.Linear(dim, dim)
        self.combine = nn.Linear(2 * dim, dim)

    def forward(self, inherent: Tensor, neighbours: Tensor, mean: Tensor) -> Tensor:
        latent = F.relu(self.latent(torch.sparse.mm(mean, neighbours)))
        # normalize's eps keeps an all-zero row at zero instead of NaN.
        return F.normalize(F.relu(self.combine(torch.cat([inherent, latent], -1))), dim=-1)


class DiffusionRepresenter(nn.Module):
    """θ1: inherent user and item embeddings diffused over the training graph, 1 or 2 hops.

    One hop: items from their users' inherent embeddings. Two hops: users from their items'
    inherent embeddings first, then items from those user representations (own weights).
    """

    def __init__(self, n_items: int, n_users: int, dim: int, users: np.ndarray,
                 items: np.ndarray, hops: int = 1) -> None:
        super().__init__()
        if hops not in (1, 2):
            raise ValueError("hops must be 1 or 2")
        self.items = nn.Embedding(n_items, dim)
        self.users = nn.Embedding(n_users, dim)
        self.hops = nn.ModuleList(Convolve(dim) for _ in range(hops))
        self.register_buffer("item_users", mean_matrix(items, users, n_items, n_users),
                             persistent=False)
        if hops == 2:
            self.register_buffer("user_items", mean_matrix(users, items, n_users, n_items),
                                 persistent=False)

    def forward(self) -> Tensor:
        users = self.users.weight
        if len(self.hops) == 2:
            users = self.hops[0](users, self.items.weight, self.user_items)
        return self.hops[-1](self.items.weight, users, self.item_users)


class InherentItems(nn.Module):
    """The no-diffusion ablation: L2-normalised inherent item embeddings, no graph."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items, dim)

    def forward(self) -> Tensor:
        return F.normalize(self.items.weight, dim=-1)


class MaskedSelfAttention(nn.Module):
    """θ2: forward and backward masked self-attention (eqs 2-7) and the user layer (eq 8).

    With one item (or none) every attention row is empty in both directions, so the encoded
    sequence is all zeros and s_u = ReLU(b3) before adaptation: the paper's design, under
    which fine-tuning on the support is what personalises (and a user with K = 1 has no
    transition to fine-tune on, so every such user gets the same ranking).
    """

    def __init__(self, dim: int, max_len: int, attention_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(dim, attention_dim, bias=False)    # W4, on the key item m
        self.query = nn.Linear(dim, attention_dim, bias=False)  # W5, on the output item n
        bound = attention_dim ** -0.5
        self.score = nn.Parameter(torch.empty(attention_dim).uniform_(-bound, bound))  # w3
        self.out = nn.Linear(2 * max_len * dim, dim)  # W6, b3
        masks = torch.stack(position_masks(max_len))  # (2, m, n): fw then bw
        self.register_buffer("order", torch.isfinite(masks), persistent=False)
        self.register_buffer("offset", torch.where(self.order, masks, 0.0), persistent=False)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (..., L, d) right-aligned item representations, valid (..., L) 0/1 -> (..., d)."""
        pairs = self.key(x).unsqueeze(-2) + self.query(x).unsqueeze(-3)  # (..., m, n, width)
        cor = (torch.sigmoid(pairs) * self.score).sum(-1)                 # eq 2 without M
        real = valid > 0
        allowed = self.order & (real[..., None, :, None] & real[..., None, None, :])
        logits = torch.where(allowed, cor.unsqueeze(-3) + self.offset,
                             torch.finfo(cor.dtype).min)
        # Eq 5 normalises over the keys m, the summation index of eqs 6-7 (its denominator's
        # "n" is a typo). A finite fill, then zeroing, leaves rows with no key at exactly 0
        # with finite gradients; -inf there would give NaN.
        att = torch.softmax(logits, dim=-2) * allowed
        encoded = att.transpose(-1, -2) @ x.unsqueeze(-3)                 # (..., 2, n, d)
        return F.relu(self.out(encoded.flatten(-3)))                      # [E_fw, E_bw]


class MeanPooling(nn.Module):
    """The no-sequence ablation: s_u = ReLU(W mean(valid items) + b), order ignored."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x is zero at padding slots (MetaCSRNet zeroes them), so its sum is over real items."""
        mean = x.sum(-2) / valid.sum(-1, keepdim=True).clamp_min(1.0)
        return F.relu(self.out(mean))


class MetaCSRNet(nn.Module):
    """Item table (θ1) + sequence encoder (θ2) + inner-product predictor (eq 9).

    Inputs per row: ``history`` (L,) item ids right-aligned, ``valid`` (L,) 0/1 and ``items``
    (C,) candidates; output (C,) logits. The table is set from outside (``reading``) so that
    it is computed once for all tasks of a batch, not once per task.
    """

    def __init__(self, representer: nn.Module, sequence: nn.Module) -> None:
        super().__init__()
        self.representer, self.sequence = representer, sequence
        self.table: Tensor | None = None

    def item_table(self) -> Tensor:
        return self.representer()

    @contextlib.contextmanager
    def reading(self, table: Tensor) -> Iterator[None]:
        self.table = table
        try:
            yield
        finally:
            self.table = None

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        if self.table is None:
            raise RuntimeError("set the item table first: `with net.reading(net.item_table()):`")
        valid = x["valid"]
        state = self.sequence(self.table[x["history"]] * valid.unsqueeze(-1), valid)
        return (state.unsqueeze(-2) * self.table[x["items"]]).sum(-1)


def pairwise_loss(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """BPR over rows whose column 0 is the true next item and the rest sampled negatives:
    eq 10 made well defined. ``target`` is unused (the positive's column says it all)."""
    per_row = -F.logsigmoid(logits[..., :1] - logits[..., 1:]).mean(-1)
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


def is_fast(name: str) -> bool:
    return name.startswith(FAST)


class SequenceTasks:
    """Rows (prefix -> next item, negatives) and meta-training tasks from warm sequences."""

    def __init__(self, data: Dataset, max_len: int, max_query: int, n_negatives: int,
                 seed: int) -> None:
        inter = data.interactions.take(chronological_order(data.interactions, seed))
        self.sequences = {u: s.item for u, s in by_user(inter).items() if len(s) >= 2}
        self.users = np.array(sorted(self.sequences), dtype=np.int64)
        self.untrained = np.setdiff1d(np.arange(data.n_items), inter.item)
        self.known = np.ones(data.n_items, dtype=bool)  # items seen in training
        self.known[self.untrained] = False
        self.n_items, self.max_len = data.n_items, max_len
        self.max_query, self.n_negatives = max_query, n_negatives

    def prefixes(self, seq: np.ndarray, targets: np.ndarray) -> Rows:
        """For each position t, the (at most max_len) items before it, right-aligned."""
        length = self.max_len
        history = np.zeros((len(targets), length), dtype=np.int64)
        valid = np.zeros((len(targets), length), dtype=np.float32)
        for r, t in enumerate(targets):
            prefix = seq[max(0, t - length):t]
            history[r, length - len(prefix):] = prefix
            valid[r, length - len(prefix):] = 1.0
        return {"history": history, "valid": valid}

    def rows(self, seq: np.ndarray, targets: np.ndarray, seen: np.ndarray,
             rng: np.random.Generator) -> Rows:
        """Training rows: each target's prefix, and seq[t] followed by negatives drawn from the
        training items outside ``seen``."""
        n, size = len(targets), len(targets) * self.n_negatives
        negatives = sample_unseen(self.n_items, np.concatenate([seen, self.untrained]), size, rng)
        if len(negatives) < size:  # the user touched every training item
            negatives = sample_unseen(self.n_items, self.untrained, size, rng)
        items = np.concatenate([seq[targets][:, None], negatives.reshape(n, self.n_negatives)], 1)
        return {**self.prefixes(seq, targets), "items": items, "target": np.ones(n, dtype=np.float32)}

    def task(self, user: int, rng: np.random.Generator) -> tuple[Rows, Rows]:
        """A window of T + Q consecutive items of the user, T uniform in 1..max_len: support =
        the transitions inside its first T items, query = its next Q items."""
        seq = self.sequences[int(user)]
        k = int(rng.integers(1, min(self.max_len, len(seq) - 1) + 1))
        q = min(self.max_query, len(seq) - k)
        start = int(rng.integers(0, len(seq) - k - q + 1))
        window = seq[start:start + k + q]
        return (self.rows(window, np.arange(1, k), seq, rng),
                self.rows(window, np.arange(k, k + q), seq, rng))

    def epoch(self, batch_size: int, rng: np.random.Generator) -> Iterator[TaskBatch]:
        """One task per warm user, in batches of tasks with similar support sizes (so little
        padding is computed), the batches in random order."""
        tasks = sorted((self.task(u, rng) for u in rng.permutation(self.users)),
                       key=lambda task: len(task[0]["target"]))
        for start in rng.permutation(np.arange(0, len(tasks), batch_size)):
            batch = tasks[start:start + batch_size]
            yield TaskBatch(pad_and_stack([s for s, _ in batch]),
                            stack_rows([pad(q, self.max_query) for _, q in batch]))

    def support(self, items: np.ndarray, rng: np.random.Generator) -> Rows:
        """A cold user's support rows: its last max_len - 1 transitions (as in training)."""
        targets = np.arange(max(1, len(items) - self.max_len + 1), len(items))
        return self.rows(items, targets, items, rng)


class MetaCSR(Recommender):
    """metaCSR and its ablations, selected by ``diffusion``, ``sequential`` and ``meta``.

    ``meta=False`` trains the same network the ordinary way (every support and query row of a
    batch is one example) and still fine-tunes θ2 on each cold user's support with the same
    steps and learning rate at test time. Epochs stop early on validation users (patience,
    best state kept). Ranking only.

    lr 1e-2 (the paper's β) and inner_lr 10 were chosen on ML-100k validation users (mean
    NDCG@10 over K = 1, 3, 5, 10). The paper's α = 1e-4 moves nothing here: a BPR mean over
    rows gives θ2 small gradients. Ten epochs keep one fit on ML-100k short.
    """

    name = "metacsr"
    predicts_ratings = False
    scores_new_items = False  # an item never seen in training scores -inf
    _transient = ("tasks", "maml", "_scorer")  # re-created by _rebuild from the training data

    def __init__(self, *, diffusion: bool = True, sequential: bool = True, meta: bool = True,
                 dim: int = 64, attention_dim: int = 16, max_len: int = 10, max_query: int = 3,
                 hops: int = 1, n_negatives: int = 4, inner_steps: int = 1, inner_lr: float = 10.0,
                 lr: float = 1e-2, epochs: int = 10, batch_size: int = 32, patience: int = 3,
                 seed: int = 0, progress: bool = False) -> None:
        if max_len < 2:
            raise ValueError("max_len must be at least 2")
        self.diffusion, self.sequential, self.meta = diffusion, sequential, meta
        self.dim, self.attention_dim, self.max_len = dim, attention_dim, max_len
        self.max_query, self.hops = max_query, hops
        self.n_negatives, self.inner_steps, self.inner_lr = n_negatives, inner_steps, inner_lr
        self.lr, self.epochs, self.batch_size, self.patience = lr, epochs, batch_size, patience
        self.seed, self.progress = seed, progress

    # --- fitting -------------------------------------------------------------------------

    def _build(self, data: Dataset) -> None:
        torch.manual_seed(self.seed)
        self.data = data  # kept: a loaded model rebuilds its tasks and item graph from it
        self._rebuild()

    def _rebuild(self) -> None:
        """Tasks, network (initialised) and engine of the training data ``self.data``."""
        if getattr(self, "data", None) is None:  # never fitted
            return
        data = self.data
        self.tasks = SequenceTasks(data, self.max_len, self.max_query, self.n_negatives, self.seed)
        inter = data.interactions
        representer = (DiffusionRepresenter(data.n_items, data.n_users, self.dim, inter.user,
                                            inter.item, self.hops)
                       if self.diffusion else InherentItems(data.n_items, self.dim))
        sequence = (MaskedSelfAttention(self.dim, self.max_len, self.attention_dim) if self.sequential
                    else MeanPooling(self.dim))
        self.net = MetaCSRNet(representer, sequence)
        self.maml = MAML(self.net, pairwise_loss, adapt=is_fast, inner_steps=self.inner_steps,
                         inner_lr=self.inner_lr)
        self._scorer: tuple[MAML, Tensor] | None = None

    def train_step(self, trainer: MetaTrainer, batch: TaskBatch) -> float:
        """One outer step on this rank's share of the batch (all of it in one process)."""
        part, weight = share_of(batch, weigh="tasks" if self.meta else "rows")
        return trainer.step(None if part is None else self.batch_loss(part), weight)

    def batch_loss(self, batch: TaskBatch) -> Tensor:
        """The outer loss of a batch of tasks, from one item table made from the live θ1."""
        with self.net.reading(self.net.item_table()):
            if self.meta:
                return self.maml.task_losses(batch).mean()
            fast, shared = self.maml.split_params()
            rows = {k: torch.cat([batch.support[k].flatten(0, 1), batch.query[k].flatten(0, 1)])
                    for k in batch.support}
            return self.maml.batch_loss(fast, shared, rows)

    @one_thread()
    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        self._build(data)
        rng = np.random.default_rng(self.seed)
        trainer = MetaTrainer(self.maml, lr=self.lr)

        def train_epoch() -> float:
            losses = [self.train_step(trainer, batch)
                      for batch in self.tasks.epoch(self.batch_size, rng)]
            self._scorer = None  # the weights moved
            return float(np.mean(losses))

        self.history = train_epochs(self, validate, epochs=self.epochs, patience=self.patience,
                                    train_epoch=train_epoch, net=self.net, progress=self.progress)
        self._scorer = None
        self.epochs_run = len(self.history)
        return self

    # --- scoring -------------------------------------------------------------------------

    def _scoring(self) -> tuple[MAML, Tensor]:
        """A float64 copy of the network with its item table, made once per trained state."""
        if self._scorer is None:
            net = float64_copy(self.net)
            maml = MAML(net, pairwise_loss, adapt=is_fast, inner_steps=self.inner_steps,
                        inner_lr=self.inner_lr)
            with torch.no_grad():
                self._scorer = maml, net.item_table()
        return self._scorer

    def _support(self, ctx: Context) -> Rows:
        items = ctx.history.item
        # Negatives seeded by the support itself: the same context always adapts the same way.
        rng = np.random.default_rng([self.seed, len(items), *items.tolist()])
        return self.tasks.support(items, rng)

    def adapted_weights(self, contexts: Sequence[Context]) -> Params:
        """θ2 adapted on each context's support, (len(contexts), ...) per parameter."""
        maml, table = self._scoring()
        supports = pad_and_stack([self._support(c) for c in contexts], torch.float64)
        with maml.model.reading(table):
            return maml.adapted(supports)

    @one_thread()
    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        # Chunks of similar history lengths, so that little support padding is adapted on.
        order = np.argsort([len(c.history) for c in contexts], kind="stable")
        outputs = chunked(self._chunk_outputs, contexts, items, size=SCORE_CHUNK, order=order)
        return [exact_scores(v, i, self.tasks.known) for v, i in zip(outputs, items, strict=True)]

    def _chunk_outputs(self, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        """Float64 scores of one chunk of users: θ2 adapted to each one's support, then the
        candidates' inner products with the user's state."""
        maml, table = self._scoring()
        fast = self.adapted_weights(contexts)
        width = max(len(i) for i in items)
        # One row per user: its last max_len items and its candidates (padded).
        rows = [{**self.tasks.prefixes(c.history.item, np.array([len(c.history)])),
                 "items": np.pad(np.asarray(i, dtype=np.int64), (0, width - len(i)))[None]}
                for c, i in zip(contexts, items, strict=True)]
        with maml.model.reading(table):
            values = maml.predict(fast, stack_rows(rows, torch.float64))[:, 0].numpy()
        return [values[t, :len(i)] for t, i in enumerate(items)]

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.score_many([ctx], [items])[0]


class MetaCSRNoDiffusion(MetaCSR):
    """metaCSR w/o Diffusion Representer: items are normalised inherent embeddings."""

    name = "metacsr-nodiffusion"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"diffusion": False, **kwargs})


class MetaCSRNoSequence(MetaCSR):
    """metaCSR w/o Sequential Recommender: mean pooling of the items, then one dense layer."""

    name = "metacsr-noseq"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"sequential": False, **kwargs})


class MetaCSRNoMeta(MetaCSR):
    """metaCSR w/o Meta Learner: ordinary training, then the same fine-tuning per cold user."""

    name = "metacsr-nometa"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"meta": False, **kwargs})
