"""Sequential recommenders: SASRec (Kang & McAuley 2018) and GRU4Rec (Hidasi et al. 2016).

Both read a user's items in the order they were consumed and predict the next one. They are
fitted on the warm users' chronological sequences, at every position, with one of two
objectives (``loss``): "ce", a softmax cross-entropy of the true next item against every item
seen in training (as RecBole trains them; the default, better on ML-100k's validation users,
see benchmarks/seq_objectives.py), or "bce", binary cross-entropy of the true next item
against one sampled item the user never touched (the SASRec paper's). A cold user is scored by
running the encoder over their K support items and taking the hidden state after the last
one; an item's score is its dot product with that state.

Token layout: 0 is padding, item i is token i + 1, and the last token (n_items + 1) is a
learned "start" token put in front of every sequence. The start token is what makes an empty
history well defined: its output state is trained to predict a user's first item. Sequences
are padded on the right, so with a causal encoder the padding never reaches a real position
and no attention row is ever fully masked.

A third objective, "sampled", is the softmax against ``n_negatives`` items drawn by training
popularity, shared by the batch, each logit corrected by minus the log of its sampling
probability (so the sampled softmax estimates the full one without favouring popular items):
the cheap form of "ce" for a catalogue too large to score whole (on ML-100k's 1,682 items it
is far below "ce": BENCHMARKS.md section 7).

Two options tried for issue 11, both off by default because neither helped on validation
users (benchmarks/seq_objectives.py beyond):
``side_features`` adds to every item's id embedding a learned projection of its genres and
release year, inside the encoder's input and the output table alike, so a new item is scored
by what it is; ``adapt_steps`` fits a per-user offset of the final state to the support at
score time (gradient steps, rate ``adapt_lr``, on the support's own next-item softmax: the
pretrained encoder adapted to the user, MAML's inner loop without meta-training).

Items never seen in training get no gradient from "ce" or "bce" (the softmax runs over the
trained items only). After training, those with genres or a release year get the
embedding a ridge regression of the trained items' embeddings on those features predicts;
items with neither (or with ``item_features=False``) score -inf: the model knows nothing of
them, and a score of 0 would rank them above every item whose dot product is negative.
Scoring follows thaw's shared path (thaw/models/neural.py): a float64 copy, float32 rounding,
-inf, chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn

from thaw import distributed
from thaw.compute import one_thread, trained_on, training_device
from thaw.data.features import FeatureSpace
from thaw.data.schema import Dataset
from thaw.data.splits import by_user, chronological_order
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender, Validator, train_epochs
from thaw.models.neural import Trainer, chunked, exact_scores, float64_copy
from thaw.models.sampling import pair_keys, sample_unseen_by

LOSSES = ("ce", "bce", "sampled")
FEATURE_RIDGE = 1.0  # the penalty of the features -> embedding regression (binary features)


class _SequenceNet(nn.Module):
    """Shared item representations plus an encoder that maps (B, L) tokens to (B, L, dim)
    states. A token's representation is its id embedding, plus, given ``side`` (a (tokens,
    features) matrix, zero for padding and start), a learned projection of its features."""

    def __init__(self, n_tokens: int, dim: int, encoder: nn.Module, side: np.ndarray | None = None) -> None:
        super().__init__()
        self.items = nn.Embedding(n_tokens, dim, padding_idx=0)
        self.encoder = encoder
        self.describe = None
        if side is not None:
            self.register_buffer("side", torch.as_tensor(side, dtype=torch.float32), persistent=False)
            self.describe = nn.Linear(side.shape[1], dim, bias=False)

    def table(self) -> Tensor:
        """(tokens, dim): every token's representation, the input and the output table."""
        if self.describe is None:
            return self.items.weight
        return self.items.weight + self.describe(self.side)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.encoder(self.table()[tokens], tokens)


class _SelfAttentionEncoder(nn.Module):
    """SASRec's encoder: learned positions and causal pre-norm self-attention blocks."""

    def __init__(self, dim: int, max_len: int, n_blocks: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, n_heads, dim_feedforward=dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, embedded: Tensor, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        pos = self.positions(torch.arange(length, device=tokens.device))
        x = self.dropout(embedded * self.scale + pos)
        # Right padding and a causal mask: every row keeps at least its own (diagonal) key,
        # so no softmax runs over a fully masked row and nothing turns into NaN.
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.norm(x)


class _RecurrentEncoder(nn.Module):
    """GRU4Rec's encoder: one GRU layer; its output at each step is the session state."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, hidden, num_layers=1, batch_first=True)
        # A hidden state wider than the item embeddings is mapped back to their size.
        self.project = nn.Identity() if hidden == dim else nn.Linear(hidden, dim)

    def forward(self, embedded: Tensor, tokens: Tensor) -> Tensor:
        out, _ = self.gru(self.dropout(embedded))
        return self.project(out)


class SequentialRecommender(Recommender):
    """Shared machinery: training data, negative sampling, the training loop, scoring.

    Subclasses only say which encoder turns embedded tokens into states (``encoder``).
    Epochs stop early on validation users (``patience`` epochs without improvement) and the
    best epoch's weights are kept. Ranking only. The patience is 4 because training first
    sits on a plateau at popularity's level for a few epochs, and a shorter patience stops
    it there.
    """

    predicts_ratings = False
    scores_new_items = True  # an embedding regressed from genres and year (-inf with neither)
    _transient = ("_scorer",)  # the float64 scoring copy, made again on first use

    def __init__(self, *, dim: int = 64, max_len: int = 50, dropout: float = 0.2,
                 epochs: int = 30, batch_size: int = 128, lr: float = 1e-3, l2: float = 0.0,
                 patience: int = 4, loss: str = "ce", n_negatives: int = 100, item_features: bool = True,
                 side_features: bool = False, adapt_steps: int = 0, adapt_lr: float = 0.1,
                 seed: int = 0) -> None:
        if loss not in LOSSES:
            raise ThawError(f"loss must be one of {', '.join(LOSSES)}, not '{loss}'")
        if n_negatives < 1 or adapt_steps < 0 or adapt_lr < 0:
            raise ThawError("n_negatives must be at least 1, adapt_steps and adapt_lr at least 0")
        self.dim, self.max_len, self.dropout, self.epochs = dim, max_len, dropout, epochs
        self.batch_size, self.lr, self.l2, self.patience, self.seed = batch_size, lr, l2, patience, seed
        self.loss, self.n_negatives, self.item_features = loss, n_negatives, item_features
        self.side_features, self.adapt_steps, self.adapt_lr = side_features, adapt_steps, adapt_lr

    def encoder(self) -> nn.Module:
        raise NotImplementedError

    # --- fitting -------------------------------------------------------------------------

    @one_thread()
    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.n_items = data.n_items
        self.start_token = data.n_items + 1
        inputs, targets, owners, seen_keys, train_items = self._windows(data)
        self.item_side = self._side_matrix(data) if self.side_features else None
        self._rebuild()
        with torch.no_grad():  # small embeddings; untrained items (and padding) stay at zero
            self.net.items.weight.normal_(0.0, 1.0 / math.sqrt(self.dim))
            trained = np.zeros(data.n_items + 2, dtype=bool)
            trained[train_items + 1] = True
            trained[self.start_token] = True
            self.net.items.weight[torch.as_tensor(~trained)] = 0.0
        self.known = trained[1:data.n_items + 1]
        if self.item_side is not None:  # an item with genres or a year is represented by them
            self.known = self.known | self.item_side[1:data.n_items + 1].any(axis=1)
        trainer = Trainer(self.net.parameters(), lr=self.lr, clip=None, weight_decay=self.l2)
        inputs_t, targets_t = torch.as_tensor(inputs), torch.as_tensor(targets)
        real = targets_t > 0
        lengths = real.sum(1)

        # Full-catalogue softmax: the classes are the trained items' tokens only, so the
        # untrained ones get no gradient and stay at zero; ``column`` maps a token to its class.
        classes = torch.as_tensor(train_items + 1)
        column = torch.full((data.n_items + 2,), -1, dtype=torch.int64)
        column[classes] = torch.arange(len(classes))
        # "sampled": negatives drawn by how often each trained item is a target; log q corrects.
        counts = torch.bincount(targets_t[real], minlength=data.n_items + 2)[classes].double()
        log_q = torch.log(counts / counts.sum()).float()
        draws = torch.Generator().manual_seed(self.seed)
        device = training_device()
        inputs_t, targets_t, real, lengths, classes, column, log_q = (
            t.to(device) for t in (inputs_t, targets_t, real, lengths, classes, column, log_q))

        def batch_loss(states: Tensor, target_tokens: Tensor, negative_tokens: Tensor | None) -> Tensor:
            weights = self.net.table()
            if self.loss == "sampled":
                return sampled_softmax(states, weights, classes, column[target_tokens], log_q,
                                       self.n_negatives, draws)
            if negative_tokens is None:  # "ce": the true next item against every trained item
                return nn.functional.cross_entropy(states @ weights[classes].T, column[target_tokens])
            pos = (states * weights[target_tokens]).sum(-1)
            neg = (states * weights[negative_tokens]).sum(-1)
            return nn.functional.softplus(-pos).mean() + nn.functional.softplus(neg).mean()

        def train_epoch() -> float:
            with trained_on(self.net):
                return run_epoch()

        def run_epoch() -> float:
            self.net.train()
            self._scorer = None
            negatives = None
            if self.loss == "bce":
                negatives = torch.as_tensor(sample_unseen_by(
                    owners, targets.shape, seen_keys, self.n_items, rng, pool=train_items) + 1).to(device)
            order = torch.as_tensor(rng.permutation(len(inputs))).to(device)
            losses = []
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                # Right padding under a causal encoder: columns after the batch's longest
                # window change nothing, so they are cut off.
                width = int(lengths[idx].max())
                mine, weight = idx, 1.0
                if distributed.active():  # this rank's windows, weighted by their targets
                    mine = idx[distributed.share(len(idx))]
                    weight = float(real[mine, :width].sum()) / float(real[idx, :width].sum())
                loss = None
                if len(mine):
                    states = self.net(inputs_t[mine, :width])
                    mask = real[mine, :width]
                    loss = batch_loss(states[mask], targets_t[mine, :width][mask],
                                      None if negatives is None else negatives[mine, :width][mask])
                elif self.loss == "sampled":  # keep this rank's negative draws in step
                    torch.multinomial(log_q.exp(), self.n_negatives, replacement=True, generator=draws)
                losses.append(trainer.step(loss, weight))
            return float(np.mean(losses))

        self.history = train_epochs(self, validate, epochs=self.epochs, patience=self.patience,
                                    train_epoch=train_epoch, net=self.net)
        if self.item_features and self.item_side is None:
            self._embed_from_features(data, train_items)
        self.net.eval()
        self._scorer = None
        self.epochs_run = len(self.history)
        return self

    def _embed_from_features(self, data: Dataset, train_items: np.ndarray) -> None:
        """Items never seen in training get the embedding their genres and release year
        predict: a ridge regression (penalty FEATURE_RIDGE) of the trained items' embeddings on
        those features. Items with neither keep -inf."""
        space = FeatureSpace(data)
        years = np.eye(space.n_years, dtype=np.float64)[space.item_year][:, 1:]  # code 0: unknown
        features = np.hstack([space.item_genres, years])
        described = features.any(axis=1)
        new = np.flatnonzero(~self.known & described)
        if not len(new) or not described[train_items].any():
            return
        design = np.hstack([np.ones((data.n_items, 1)), features])
        x = design[train_items]
        with torch.no_grad():
            weights = self.net.items.weight
            y = weights[torch.as_tensor(train_items + 1)].double().numpy()
            coef = np.linalg.solve(x.T @ x + FEATURE_RIDGE * np.eye(x.shape[1]), x.T @ y)
            weights[torch.as_tensor(new + 1)] = torch.as_tensor(design[new] @ coef, dtype=weights.dtype)
        self.known = self.known | described

    @staticmethod
    def _side_matrix(data: Dataset) -> np.ndarray:
        """(n_items + 2, features): each token's genres and release-year bucket (one-hot),
        zero rows for padding and the start token."""
        space = FeatureSpace(data)
        years = np.eye(space.n_years, dtype=np.float32)[space.item_year][:, 1:]  # code 0: unknown
        side = np.zeros((data.n_items + 2, space.item_genres.shape[1] + years.shape[1]), dtype=np.float32)
        side[1:data.n_items + 1] = np.hstack([space.item_genres, years])
        return side

    def _rebuild(self) -> None:
        """The network, freshly initialised, for ``n_items`` items."""
        if getattr(self, "n_items", None) is None:  # never fitted
            return
        self.net = _SequenceNet(self.n_items + 2, self.dim, self.encoder(), getattr(self, "item_side", None))

    def _windows(self, data: Dataset) -> tuple[np.ndarray, ...]:
        """Training windows from every warm user's chronological sequence.

        A user's tokens are [start, i1 + 1, i2 + 1, ...]; they are cut into windows of
        ``max_len`` inputs whose targets are the same tokens shifted by one, so every item is
        a target exactly once and the first window of each user begins at the start token.
        """
        inter = data.interactions
        inter = inter.take(chronological_order(inter, self.seed))
        rows_in, rows_out, owners = [], [], []
        length = self.max_len
        for user, seq in by_user(inter).items():
            tokens = np.concatenate([[self.start_token], seq.item + 1])
            for begin in range(0, len(seq), length):
                x = tokens[begin:begin + length]
                y = tokens[begin + 1:begin + length + 1]
                rows_in.append(np.pad(x, (0, length - len(x))))
                rows_out.append(np.pad(y, (0, length - len(y))))
                owners.append(user)
        inputs = np.asarray(rows_in, dtype=np.int64).reshape(-1, length)
        targets = np.asarray(rows_out, dtype=np.int64).reshape(-1, length)
        seen_keys = pair_keys(inter.user, inter.item, data.n_items)
        return inputs, targets, np.asarray(owners, dtype=np.int64), seen_keys, np.unique(inter.item)

    # --- scoring -------------------------------------------------------------------------

    def _tokens(self, ctx: Context) -> np.ndarray:
        """The start token and the last (max_len - 1) support items, right-padded to max_len."""
        items = ctx.history.item[max(0, len(ctx.history) - (self.max_len - 1)):]
        tokens = np.concatenate([[self.start_token], items + 1])
        return np.pad(tokens, (0, self.max_len - len(tokens)))

    def _scoring_net(self) -> _SequenceNet:
        """A float64 copy of the network for scoring, made once per trained state."""
        if getattr(self, "_scorer", None) is None:
            self._scorer = float64_copy(self.net)
        return self._scorer

    def user_states(self, contexts: Sequence[Context]) -> np.ndarray:
        """(len(contexts), dim): the encoder's state after each context's last support item.

        One forward pass over all of them (``score_many`` hands it a chunk at a time). Every
        context is padded to max_len whatever the chunk, and the network runs in float64, so
        a context's state depends on which others share its batch only at the level of
        float64 rounding (which ``score_many`` then rounds away).
        """
        if len(contexts) == 0:
            return np.empty((0, self.dim))
        net = self._scoring_net()
        with torch.no_grad():
            tokens = torch.as_tensor(np.stack([self._tokens(c) for c in contexts]))
            last = np.asarray([min(len(c.history), self.max_len - 1) for c in contexts])
            out = net(tokens)
        final = out[np.arange(len(contexts)), last].numpy().astype(np.float64)
        if getattr(self, "adapt_steps", 0) and last.max() > 0:  # every position's state, then
            states = out.numpy().astype(np.float64)
            table = net.table().detach().numpy()
            for row, (n, seq) in enumerate(zip(last, tokens.numpy(), strict=True)):
                if n:
                    final[row] += self._support_offset(states[row, :n], seq[1:n + 1], table)
        return final

    def _support_offset(self, states: np.ndarray, targets: np.ndarray, table: np.ndarray) -> np.ndarray:
        """The offset to a user's state that ``adapt_steps`` gradient steps on the support's
        own next-item softmax (over the items the model knows) reach from zero.

        ``states[t]`` is the encoder's state before support item ``targets[t]``; the softmax's
        gradient in a shared offset is the mean over t of (p_t - onehot_t) @ table."""
        known = np.flatnonzero(self.known) + 1
        usable = self.known[targets - 1]  # a support item the model knows nothing of teaches nothing
        states, targets = states[usable], targets[usable]
        if not len(targets):
            return np.zeros(table.shape[1])
        weights = table[known]
        column = np.searchsorted(known, targets)
        logits_base = states @ weights.T
        offset = np.zeros(states.shape[1])
        for _ in range(self.adapt_steps):
            logits = logits_base + weights @ offset
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(targets)), column] -= 1.0
            offset -= self.adapt_lr * (p @ weights).mean(axis=0)
        return offset

    def _chunk_outputs(self, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        """Float64 scores of one chunk: each item's representation against the user's state."""
        table = self._scoring_net().table().detach().numpy()
        return [table[np.asarray(i, dtype=np.int64) + 1] @ s
                for s, i in zip(self.user_states(contexts), items, strict=True)]

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        with one_thread():
            outputs = chunked(self._chunk_outputs, contexts, items)
        return [exact_scores(v, i, self.known) for v, i in zip(outputs, items, strict=True)]

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.score_many([ctx], [items])[0]


def sampled_softmax(states: Tensor, table: Tensor, classes: Tensor, target_columns: Tensor, log_q: Tensor,
                    n_negatives: int, generator: torch.Generator) -> Tensor:
    """Cross-entropy of each true next item against ``n_negatives`` classes drawn by
    exp(log_q), every logit minus its log_q (the logQ correction); a drawn negative that is a
    row's own target is masked out of that row."""
    # drawn on the CPU by the seeded generator, wherever the states are
    drawn = torch.multinomial(log_q.exp().cpu(), n_negatives, replacement=True,
                              generator=generator).to(states.device)
    pos = (states * table[classes[target_columns]]).sum(-1, keepdim=True) - log_q[target_columns, None]
    neg = states @ table[classes[drawn]].T - log_q[drawn]
    neg = neg.masked_fill(drawn[None, :] == target_columns[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.int64, device=logits.device))


class SASRec(SequentialRecommender):
    """SASRec: causal self-attention over the sequence (2 blocks, learned positions)."""

    name = "sasrec"

    def __init__(self, *, n_blocks: int = 2, n_heads: int = 1, **kwargs) -> None:
        # lr 3e-3, not 1e-3: with "ce" its best validation NDCG@10 is 0.748 (epoch 19) against
        # 0.740 at 1e-3, still rising at epoch 30 (benchmarks/seq_objectives.py grid).
        super().__init__(**{"lr": 3e-3, **kwargs})
        self.n_blocks, self.n_heads = n_blocks, n_heads

    def encoder(self) -> nn.Module:
        return _SelfAttentionEncoder(self.dim, self.max_len, self.n_blocks, self.n_heads, self.dropout)


class GRU4Rec(SequentialRecommender):
    """GRU4Rec: one GRU layer whose hidden state (``hidden`` wide, default ``dim``) is the
    session state."""

    name = "gru4rec"

    def __init__(self, *, hidden: int | None = None, **kwargs) -> None:
        # lr 3e-3, not 1e-3: at 1e-3 its validation NDCG@10 is still rising at epoch 30 (0.732),
        # at 3e-3 it peaks at 0.750 in epoch 21 (benchmarks/seq_objectives.py grid).
        super().__init__(**{"lr": 3e-3, **kwargs})
        self.hidden = hidden

    def encoder(self) -> nn.Module:
        return _RecurrentEncoder(self.dim, self.hidden or self.dim, self.dropout)
