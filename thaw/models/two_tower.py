"""Two-tower matching models: a user tower and an item tower whose dot product ranks items, so
item vectors can be exported and the whole catalogue searched by one matrix product.

What they share is here: the item tower (identity for items seen in training, genres, year and
a TF-IDF + SVD vector of the item's text, so new items are scored by their content), the user
inputs (profile codes, the user's recent items, state features), the training samples, the
epoch loop and the scoring path. The models of the matching literature that Cold & Warm Net is
compared with are here too: ``dssm`` (two MLP towers, cosine similarity), ``youtubednn``
(profile and mean-pooled history, sampled softmax) and ``fm`` (a factorisation machine over
the user's and the item's fields). Cold & Warm Net itself is thaw/models/coldwarm.py.

Training samples, for every model alike: each epoch every warm user once, their history cut at
a random length (0 to ``max_cut``, or, one time in five, all but the last ``targets`` items),
so every model learns to serve users at every stage; the ``targets`` items after the cut are
positives, each with ``n_negatives`` items the user never touched. Epochs stop early on
validation users. A known user (``ctx.user``) is served from their training history followed by
the request's; a new user from the request's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn

from thaw import distributed
from thaw.compute import one_thread
from thaw.data.features import FeatureSpace, item_documents
from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import by_user, chronological_order
from thaw.models.base import Context, Recommender, Validator, train_epochs
from thaw.models.neural import Trainer, chunked, exact_scores, float64_copy
from thaw.models.sampling import pair_keys, sample_unseen_by

N_STATE = 3
SECONDS_PER_DAY = 86400.0
FULL_HISTORY_SHARE = 0.2  # training samples that keep all but the last ``targets`` items


def mlp(width: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out))


def state_features(history: Interactions) -> np.ndarray:
    """How far along a user is: log(1 + n), n == 0, log(1 + days spanned by the history)."""
    n = len(history)
    span = float(history.ts.max() - history.ts.min()) / SECONDS_PER_DAY if n else 0.0
    return np.array([np.log1p(n), float(n == 0), np.log1p(max(span, 0.0))], dtype=np.float32)


def item_text_vectors(data: Dataset, width: int, seed: int) -> np.ndarray:
    """Unit-length TF-IDF + truncated SVD vectors of every item's title, genres and year (one
    zero column when no item has text)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = item_documents(data)
    if not any(d.strip() for d in docs):
        return np.zeros((data.n_items, 1), dtype=np.float32)
    tfidf = TfidfVectorizer().fit_transform(docs)
    width = min(width, tfidf.shape[1] - 1, data.n_items - 1)
    if width < 1:
        return np.zeros((data.n_items, 1), dtype=np.float32)
    text = TruncatedSVD(width, random_state=seed).fit_transform(tfidf)
    return (text / (np.linalg.norm(text, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def log_popularity(data: Dataset) -> np.ndarray:
    """Standardised log(1 + training interactions) of every item."""
    counts = np.log1p(np.bincount(data.interactions.item, minlength=data.n_items).astype(np.float64))
    return ((counts - counts.mean()) / (counts.std() or 1.0)).astype(np.float32)


class ItemTower(nn.Module):
    """Item index -> vector, from identity (code 0 for items never trained on), genres, year
    and text. The features are buffers, so the tower needs only indices."""

    def __init__(self, space: FeatureSpace, text: np.ndarray, dim: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("code", torch.as_tensor(space.item_code, dtype=torch.long))
        self.register_buffer("genres", torch.as_tensor(space.item_genres, dtype=torch.float32))
        self.register_buffer("year", torch.as_tensor(space.item_year, dtype=torch.long))
        self.register_buffer("text", torch.as_tensor(text, dtype=torch.float32))
        self.identity = nn.Embedding(len(space.item_code) + 1, dim, padding_idx=0)
        self.genre = nn.Linear(space.n_genres, dim, bias=False)
        self.release = nn.Embedding(space.n_years, dim)
        self.words = nn.Linear(text.shape[1], dim, bias=False)
        self.out = mlp(4 * dim, hidden, dim)

    def fields(self, index: Tensor) -> list[Tensor]:
        """One embedding per item field: identity, genres (averaged), year, text."""
        genres = self.genres[index]
        genres = genres / genres.sum(-1, keepdim=True).clamp_min(1.0)
        return [self.identity(self.code[index]), self.genre(genres), self.release(self.year[index]),
                self.words(self.text[index])]

    def forward(self, index: Tensor) -> Tensor:
        return self.out(torch.cat(self.fields(index), -1))


class TwoTowerNet(nn.Module):
    """What every two-tower network has: the item tower, profile embeddings and the pooled
    history. Subclasses say how the user vector is made (``users``)."""

    def __init__(self, space: FeatureSpace, text: np.ndarray, dim: int, hidden: int) -> None:
        super().__init__()
        self.item_tower = ItemTower(space, text, dim, hidden)
        self.profile = nn.ModuleList(nn.Embedding(c, dim) for c in space.cardinalities)

    def profile_fields(self, x: dict[str, Tensor]) -> list[Tensor]:
        return [emb(x["profile"][:, i]) for i, emb in enumerate(self.profile)]

    def action(self, x: dict[str, Tensor]) -> Tensor:
        """The mean item-tower vector of the user's recent items (zero with no history)."""
        mask = x["history_mask"].unsqueeze(-1)
        return (self.item_tower(x["history"]) * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def users(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """At least "user": (B, dim); any other entry is the subclass's own."""
        raise NotImplementedError

    def logits(self, users: dict[str, Tensor], items: Tensor, which: str = "user") -> Tensor:
        """(B, C) logits of each user's candidates ``items`` (B, C)."""
        return (users[which].unsqueeze(1) * self.item_tower(items)).sum(-1)

    def user_vectors(self, users: dict[str, Tensor]) -> Tensor:
        """(B, D) vectors whose dot product with ``item_vectors`` ranks items as ``logits`` does
        (equal up to a per-user constant and a positive per-user scale)."""
        return users["user"]

    def item_vectors(self, items: Tensor) -> Tensor:
        return self.item_tower(items)


class TwoTower(Recommender):
    """A two-tower model fitted on cut histories of warm users with BCE on sampled negatives.
    Subclasses give the network (``network``) and may change the loss (``loss``)."""

    scores_new_items = True  # the item tower reads the item's content
    _transient = ("space", "sequences")

    def __init__(self, *, dim: int = 32, hidden: int = 64, text_dim: int = 32, max_history: int = 50,
                 max_cut: int = 20, targets: int = 5, n_negatives: int = 4, epochs: int = 100,
                 patience: int = 8, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                 progress: bool = False) -> None:
        self.dim, self.hidden, self.text_dim, self.max_history = dim, hidden, text_dim, max_history
        self.max_cut, self.targets, self.n_negatives = max_cut, targets, n_negatives
        self.epochs, self.patience, self.batch_size, self.lr = epochs, patience, batch_size, lr
        self.seed, self.progress = seed, progress

    def network(self) -> TwoTowerNet:
        raise NotImplementedError

    def _prepare(self, data: Dataset) -> None:
        """What fit computes before the network: item text vectors and popularity; subclasses
        add their own (groups, feature selection) and call this first."""
        self.data = data
        self.space = FeatureSpace(data)
        self.item_text = item_text_vectors(data, self.text_dim, self.seed)
        self.item_popularity = log_popularity(data)

    def _rebuild(self) -> None:
        if getattr(self, "data", None) is None:  # never fitted
            return
        self.space = FeatureSpace(self.data)
        inter = self.data.interactions
        self.sequences = by_user(inter.take(chronological_order(inter, self.seed)))
        self.net = self.network()

    # --- fitting -------------------------------------------------------------------------

    def user_inputs(self, codes: np.ndarray, histories: Sequence[Interactions]) -> dict[str, Tensor]:
        """Network inputs for users with these profile codes and chronological histories."""
        width = max(1, max((min(len(h), self.max_history) for h in histories), default=1))
        items = np.zeros((len(histories), width), dtype=np.int64)
        mask = np.zeros((len(histories), width), dtype=np.float32)
        for row, h in enumerate(histories):
            recent = h.item[-self.max_history:]
            items[row, :len(recent)], mask[row, :len(recent)] = recent, 1.0
        state = np.stack([state_features(h) for h in histories]) if histories else np.zeros((0, N_STATE))
        return {"profile": torch.as_tensor(np.asarray(codes, dtype=np.int64)),
                "history": torch.as_tensor(items), "history_mask": torch.as_tensor(mask),
                "state": torch.as_tensor(state, dtype=torch.float32)}

    def training_batch(self, users: np.ndarray, rng: np.random.Generator, seen: np.ndarray
                       ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """(inputs, items (B, C), targets, mask): histories cut at random lengths, the next
        ``targets`` items as positives, then ``n_negatives`` unseen items per positive slot."""
        histories, pos = [], np.zeros((len(users), self.targets), dtype=np.int64)
        pos_mask = np.zeros((len(users), self.targets), dtype=bool)
        for row, user in enumerate(users):
            seq = self.sequences[int(user)]
            if rng.random() < FULL_HISTORY_SHARE:
                cut = max(0, len(seq) - self.targets)
            else:
                cut = int(rng.integers(0, min(self.max_cut, len(seq) - 1) + 1))
            histories.append(seq.take(slice(0, cut)))
            nxt = seq.item[cut:cut + self.targets]
            pos[row, :len(nxt)], pos_mask[row, :len(nxt)] = nxt, True
        neg = sample_unseen_by(users, (len(users), self.targets * self.n_negatives), seen,
                               self.data.n_items, rng)
        items = np.concatenate([pos, neg], 1)
        target = np.concatenate([np.ones_like(pos), np.zeros_like(neg)], 1).astype(np.float32)
        mask = np.concatenate([pos_mask, np.repeat(pos_mask, self.n_negatives, 1)], 1).astype(np.float32)
        x = self.user_inputs(self.space.user_codes[users], histories)
        return x, torch.as_tensor(items), torch.as_tensor(target), torch.as_tensor(mask)

    def loss(self, x: dict[str, Tensor], items: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Binary cross-entropy of the user's logits over the rows whose mask is 1."""
        return masked_mean(bce(self.net.logits(self.net.users(x), items), target), mask)

    def _train_step(self, trainer: Trainer, batch: tuple[dict[str, Tensor], Tensor, Tensor, Tensor]) -> float:
        """One step on this rank's share of the users (all of them in one process), weighted
        by its share of the positive slots every loss is averaged over."""
        if not distributed.active():
            return trainer.step(self.loss(*batch))
        x, items, target, mask = batch
        rows = distributed.share(len(items))
        if rows.start == rows.stop:
            return trainer.step(None)
        slots = mask[:, :self.targets]
        weight = float(slots[rows].sum()) / max(float(slots.sum()), 1.0)
        return trainer.step(self.loss({k: v[rows] for k, v in x.items()}, items[rows], target[rows],
                                      mask[rows]), weight)

    @one_thread()
    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._prepare(data)
        self._rebuild()
        users = np.array([u for u, s in self.sequences.items() if len(s) >= 2], dtype=np.int64)
        seen = pair_keys(data.interactions.user, data.interactions.item, data.n_items)
        trainer = Trainer(self.net.parameters(), lr=self.lr)

        def epoch() -> float:
            self.net.train()
            order = rng.permutation(users)
            losses = [self._train_step(trainer, self.training_batch(order[s:s + self.batch_size], rng, seen))
                      for s in range(0, len(order), self.batch_size)]
            self.net.eval()
            return float(np.mean(losses)) if losses else 0.0

        self.history = train_epochs(self, validate, epochs=self.epochs, patience=self.patience,
                                    train_epoch=epoch, net=self.net, progress=self.progress)
        self.net.eval()
        return self

    # --- scoring -------------------------------------------------------------------------

    def _history(self, ctx: Context) -> Interactions:
        """The request's support, after the user's training history when the user is known."""
        if ctx.user is None or ctx.user not in self.sequences:
            return ctx.history
        trained = self.sequences[ctx.user]
        return Interactions(*(np.concatenate([getattr(trained, c), getattr(ctx.history, c)])
                              for c in ("user", "item", "rating", "ts")))

    def _codes(self, ctx: Context) -> np.ndarray:
        return self.space.request_codes(ctx.user, ctx.profile)

    def request_inputs(self, contexts: Sequence[Context]) -> dict[str, Tensor]:
        return self.user_inputs(np.stack([self._codes(c) for c in contexts]),
                                [self._history(c) for c in contexts])

    def _score_chunk(self, net: nn.Module, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        x = {k: v.double() if v.is_floating_point() else v for k, v in self.request_inputs(contexts).items()}
        width = max(1, max(len(i) for i in items))
        index = torch.as_tensor(np.stack([np.pad(np.asarray(i, dtype=np.int64), (0, width - len(i)))
                                          for i in items]))
        with torch.no_grad():
            values = net.logits(net.users(x), index).numpy()
        known = np.ones(self.data.n_items, dtype=bool)  # new items are scored by their content
        return [exact_scores(values[row, :len(i)], i, known) for row, i in enumerate(items)]

    @one_thread()
    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        net = float64_copy(self.net)
        return chunked(lambda c, i: self._score_chunk(net, c, i), contexts, items)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.score_many([ctx], [items])[0]

    # --- retrieval: the towers apart, for an index over the whole catalogue -------------

    @one_thread()
    def user_embeddings(self, contexts: Sequence[Context]) -> np.ndarray:
        """(B, D) float32 query vectors: a user's ranking of the catalogue is the order of
        ``user_embeddings @ item_embeddings().T`` (see thaw/models/retrieval.py)."""
        with torch.no_grad():
            return self.net.user_vectors(self.net.users(self.request_inputs(contexts))).numpy().astype(np.float32)

    @one_thread()
    def item_embeddings(self) -> np.ndarray:
        """(n_items, D) float32 vectors of every item, new ones included."""
        with torch.no_grad():
            return self.net.item_vectors(torch.arange(self.data.n_items)).numpy().astype(np.float32)


def bce(logits: Tensor, target: Tensor) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


# --- the matching baselines ------------------------------------------------------------------

class _DSSMNet(TwoTowerNet):
    def __init__(self, space: FeatureSpace, text: np.ndarray, dim: int, hidden: int, temperature: float) -> None:
        super().__init__(space, text, dim, hidden)
        self.temperature = temperature
        self.tower = mlp(dim * (len(space.cardinalities) + 1), hidden, dim)

    def users(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"user": self.tower(torch.cat([*self.profile_fields(x), self.action(x)], -1))}

    def logits(self, users: dict[str, Tensor], items: Tensor, which: str = "user") -> Tensor:
        u = nn.functional.normalize(users[which], dim=-1).unsqueeze(1)
        v = nn.functional.normalize(self.item_tower(items), dim=-1)
        return (u * v).sum(-1) / self.temperature

    def user_vectors(self, users: dict[str, Tensor]) -> Tensor:
        return nn.functional.normalize(users["user"], dim=-1)

    def item_vectors(self, items: Tensor) -> Tensor:
        return nn.functional.normalize(self.item_tower(items), dim=-1)


class DSSM(TwoTower):
    """DSSM: an MLP user tower over the profile and the pooled history, the item tower, cosine
    similarity over a temperature."""

    name = "dssm"

    def __init__(self, *, temperature: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature

    def network(self) -> TwoTowerNet:
        return _DSSMNet(self.space, self.item_text, self.dim, self.hidden, self.temperature)


class _YouTubeNet(TwoTowerNet):
    def __init__(self, space: FeatureSpace, text: np.ndarray, dim: int, hidden: int) -> None:
        super().__init__(space, text, dim, hidden)
        self.tower = nn.Sequential(mlp(dim * (len(space.cardinalities) + 1), hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, dim))

    def users(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"user": self.tower(torch.cat([*self.profile_fields(x), self.action(x)], -1))}


class YouTubeDNN(TwoTower):
    """YouTube DNN (Covington et al. 2016): profile and mean-pooled history through a ReLU
    tower; trained with a sampled softmax, each positive against its own sampled items."""

    name = "youtubednn"

    def network(self) -> TwoTowerNet:
        return _YouTubeNet(self.space, self.item_text, self.dim, self.hidden)

    def loss(self, x: dict[str, Tensor], items: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        logits = self.net.logits(self.net.users(x), items)
        t, k = self.targets, self.n_negatives
        pos = logits[:, :t].unsqueeze(-1)                                # (B, T, 1)
        neg = logits[:, t:].reshape(len(logits), t, k)  # negatives j * k .. j * k + k - 1 belong to positive j
        ce = -torch.log_softmax(torch.cat([pos, neg], -1), -1)[..., 0]
        return masked_mean(ce, mask[:, :t])


class _FMNet(TwoTowerNet):
    """A factorisation machine whose fields are the user's profile fields and pooled history
    and the item's identity, genres, year and text. Split into the user side and the item
    side, its pairwise term is <sum of user fields, sum of item fields> plus each side's own
    pairs; the user side's own terms do not change a user's ranking but are part of the model
    it is trained as."""

    def __init__(self, space: FeatureSpace, text: np.ndarray, dim: int, hidden: int) -> None:
        super().__init__(space, text, dim, hidden)
        self.history_item = nn.Embedding(len(space.item_code) + 1, dim, padding_idx=0)
        self.user_linear = nn.ModuleList(nn.Embedding(c, 1) for c in space.cardinalities)
        self.item_linear = nn.Embedding(len(space.item_code) + 1, 1, padding_idx=0)
        self.bias = nn.Parameter(torch.zeros(()))
        # Start every factor small: with unit-variance factors the pairwise terms of a dozen
        # fields put the first logits in the tens and training crawls out of saturation.
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Embedding, nn.Linear)):
                    module.weight.normal_(0.0, 0.01)
                    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                        module.weight[module.padding_idx] = 0.0

    @staticmethod
    def _own_pairs(fields: list[Tensor]) -> Tensor:
        stacked = torch.stack(fields, -2)
        return 0.5 * (stacked.sum(-2) ** 2 - (stacked ** 2).sum(-2)).sum(-1)

    def users(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        mask = x["history_mask"].unsqueeze(-1)
        codes = self.item_tower.code[x["history"]]
        history = (self.history_item(codes) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        fields = [*self.profile_fields(x), history]
        linear = sum((emb(x["profile"][:, i]).squeeze(-1) for i, emb in enumerate(self.user_linear)),
                     torch.zeros(len(history), dtype=history.dtype))
        return {"user": torch.stack(fields, -2).sum(-2), "self": self._own_pairs(fields) + linear + self.bias}

    def logits(self, users: dict[str, Tensor], items: Tensor, which: str = "user") -> Tensor:
        fields = self.item_tower.fields(items)
        item_sum = torch.stack(fields, -2).sum(-2)
        pairs = (users[which].unsqueeze(1) * item_sum).sum(-1)
        return pairs + self._item_own(items, fields) + users["self"].unsqueeze(1)

    def _item_own(self, items: Tensor, fields: list[Tensor]) -> Tensor:
        return self._own_pairs(fields) + self.item_linear(self.item_tower.code[items]).squeeze(-1)

    def user_vectors(self, users: dict[str, Tensor]) -> Tensor:
        """[user field sum, 1]: the item's own terms ride on the constant."""
        return torch.cat([users["user"], torch.ones(len(users["user"]), 1, dtype=users["user"].dtype)], -1)

    def item_vectors(self, items: Tensor) -> Tensor:
        fields = self.item_tower.fields(items)
        return torch.cat([torch.stack(fields, -2).sum(-2), self._item_own(items, fields).unsqueeze(-1)], -1)


class FM(TwoTower):
    """Factorisation machine over user and item fields (Rendle 2010), BCE on sampled negatives."""

    name = "fm"

    def network(self) -> TwoTowerNet:
        return _FMNet(self.space, self.item_text, self.dim, self.hidden)
