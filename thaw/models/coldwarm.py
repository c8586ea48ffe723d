"""Cold & Warm Net (arXiv 2309.15646): a two-tower matching model for cold-start users.

A cold-start expert reads the user's profile and group; a warm-up expert reads the same plus
the user's actions (their history); a gate fed the user's state (how much they have done)
weighs the two. Dynamic knowledge distillation lets the warm expert teach the cold one on the
samples where the warm expert is right and the cold one is not; a bias net adds a per-user
bias from features chosen by mutual information. The item tower reads identity and content,
so new items are scored too.

The paper gives no equations and no code; where it is silent, these are the choices:

- Profile: thaw's FeatureSpace codes (gender, age band, occupation, zip prefix). Action: the
  mean item-tower vector of the user's last ``max_history`` items. State: log(1 + support
  size), whether the support is empty, log(1 + days between its first and last interaction).
- Groups: k-means over warm users' behaviour (their rows of the user-item matrix, L2-normed and
  reduced by truncated SVD). Every user, warm or cold, is placed by profile through a
  multinomial logistic regression fitted on the warm users' clusters, so training and serving
  assign groups the same way; the group embedding is the probability-weighted mix.
- Gate: g = sigmoid(MLP(state)); the user vector is g * warm + (1 - g) * cold.
- Losses: binary cross-entropy on the combined logit and on each expert's own logit (the same
  item vector and bias). Dynamic distillation: per sample, where the warm expert's loss is
  below the cold expert's, ``alpha`` * BCE(cold logit, sigmoid(warm logit)), the warm side
  detached: the cold expert learns from the warm one, never the other way.
- Bias net: a bias constant over a user's items cannot change that user's ranking, so the net
  (over the selected profile fields and the state) emits a vector dotted with the item's
  [1, log popularity, genres]: the user-level bias plus how strongly users of this kind follow
  popularity and genres. The fields are those with the highest mutual information
  (scikit-learn, discrete) with how mainstream a warm user is (the quartile of their items'
  mean log popularity).
- Item tower: identity (items seen in training; new items share code 0), genres, year and a
  TF-IDF + SVD vector of title, genres and year, through an MLP.
- Training: each epoch every warm user once, their history cut at a random length (0 to
  ``max_cut``, or, one time in five, all but the last ``targets`` items) so the gate sees every
  regime; the ``targets`` items after the cut are positives, each with ``n_negatives`` items the
  user never touched. Epochs stop early on validation users.

Ablations: ``mode`` "gate" (the paper), "average" (experts averaged, no gate), "cold" or "warm"
(one expert alone); ``alpha`` = 0 (no distillation); ``bias`` False (no bias net).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from thaw.data.features import FeatureSpace
from thaw.data.schema import Dataset
from thaw.models.base import Context
from thaw.models.two_tower import N_STATE, TwoTower, TwoTowerNet, bce, masked_mean, mlp

MODES = ("gate", "average", "cold", "warm")


class _ColdWarmNet(TwoTowerNet):
    """The user side: both experts, the gate and the bias net."""

    def __init__(self, space: FeatureSpace, text: np.ndarray, bias_items: np.ndarray, n_groups: int,
                 bias_fields: list[int], dim: int, hidden: int, mode: str, bias: bool) -> None:
        super().__init__(space, text, dim, hidden)
        self.mode, self.use_bias, self.bias_fields = mode, bias, list(bias_fields)
        self.register_buffer("bias_items", torch.as_tensor(bias_items, dtype=torch.float32))
        self.groups = nn.Linear(n_groups, dim, bias=False)
        base = dim * (len(space.cardinalities) + 1)
        self.cold = mlp(base, hidden, dim)
        self.warm = mlp(base + dim, hidden, dim)
        self.gate = mlp(N_STATE, 16, 1)
        self.bias_net = mlp(dim * len(self.bias_fields) + N_STATE, 16, bias_items.shape[1])

    def users(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Both experts' vectors, the combined one and the bias vector of a batch of users."""
        profile = self.profile_fields(x)
        base = torch.cat([*profile, self.groups(x["groups"])], -1)
        cold = self.cold(base)
        warm = self.warm(torch.cat([base, self.action(x)], -1))
        if self.mode == "gate":
            g = torch.sigmoid(self.gate(x["state"]))
            user = g * warm + (1 - g) * cold
        elif self.mode == "average":
            user = (warm + cold) / 2
        else:
            user = cold if self.mode == "cold" else warm
        if self.use_bias:
            bias = self.bias_net(torch.cat([*(profile[i] for i in self.bias_fields), x["state"]], -1))
        else:
            bias = torch.zeros(len(user), self.bias_items.shape[1], dtype=user.dtype)
        return {"cold": cold, "warm": warm, "user": user, "bias": bias}

    def logits(self, users: dict[str, Tensor], items: Tensor, which: str = "user") -> Tensor:
        bias = (users["bias"].unsqueeze(1) * self.bias_items[items]).sum(-1)
        return super().logits(users, items, which) + bias

    def user_vectors(self, users: dict[str, Tensor]) -> Tensor:
        """[user vector, bias vector], against [item vector, item bias features]."""
        return torch.cat([users["user"], users["bias"]], -1)

    def item_vectors(self, items: Tensor) -> Tensor:
        return torch.cat([self.item_tower(items), self.bias_items[items]], -1)


class ColdWarmNet(TwoTower):
    """Cold & Warm Net: cold and warm experts, a state gate, dynamic distillation, a bias net."""

    name = "coldwarm"
    main_job_item_cold = True

    def __init__(self, *, mode: str = "gate", alpha: float = 0.5, bias: bool = True, n_groups: int = 8,
                 n_bias_fields: int = 2, **kwargs) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(**kwargs)
        self.mode, self.alpha, self.bias = mode, float(alpha), bool(bias)
        self.n_groups, self.n_bias_fields = n_groups, n_bias_fields

    def network(self) -> TwoTowerNet:
        return _ColdWarmNet(self.space, self.item_text, self.bias_items, len(self.group_intercept),
                            self.bias_fields, self.dim, self.hidden, self.mode, self.bias)

    # --- what fit learns before the network: groups and the bias net's fields ----------

    def _prepare(self, data: Dataset) -> None:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_selection import mutual_info_classif

        super()._prepare(data)
        space, inter = self.space, data.interactions
        self.bias_items = np.column_stack([np.ones(data.n_items), self.item_popularity,
                                           space.item_genres]).astype(np.float32)
        # Groups: k-means over warm users' behaviour, then a profile -> group classifier.
        warm = np.unique(inter.user)
        matrix = sp.csr_matrix((np.ones(len(inter)), (inter.user, inter.item)),
                               shape=(data.n_users, data.n_items))[warm]
        matrix.data[:] = 1.0
        counts = np.diff(matrix.indptr)
        normed = sp.diags(1.0 / np.sqrt(np.maximum(counts, 1))) @ matrix
        n_groups = max(1, min(self.n_groups, len(warm)))
        rank = min(16, data.n_items - 1, len(warm) - 1)
        behaviour = TruncatedSVD(rank, random_state=self.seed).fit_transform(normed) if rank >= 1 \
            else np.zeros((len(warm), 1))
        labels = KMeans(n_groups, n_init=4, random_state=self.seed).fit_predict(behaviour) \
            if n_groups > 1 else np.zeros(len(warm), dtype=np.int64)
        self._fit_groups(space.user_codes[warm], labels, n_groups)
        # Bias fields: the profile fields most informative of how mainstream a user is.
        self.bias_fields: list[int] = []
        self.field_information: dict[str, float] = {}
        if space.fields:
            mean_pop = (matrix @ self.item_popularity.astype(np.float64)) / np.maximum(counts, 1)
            quartile = np.searchsorted(np.quantile(mean_pop, [0.25, 0.5, 0.75]), mean_pop)
            mi = mutual_info_classif(space.user_codes[warm], quartile, discrete_features=True,
                                     random_state=self.seed)
            self.field_information = {f: float(v) for f, v in zip(space.fields, mi, strict=True)}
            self.bias_fields = [int(i) for i in np.argsort(-mi, kind="stable") if mi[i] > 0][:self.n_bias_fields]

    def _fit_groups(self, codes: np.ndarray, labels: np.ndarray, n_groups: int) -> None:
        """A multinomial logistic regression from one-hot profile codes to the user's group,
        kept as plain arrays (coefficients, intercepts) so it saves as data."""
        from sklearn.linear_model import LogisticRegression

        onehot = self._onehot(codes)
        present = np.unique(labels)
        freq = np.bincount(labels, minlength=n_groups) + 1.0
        self.group_coef = np.zeros((n_groups, onehot.shape[1]))
        self.group_intercept = np.log(freq / freq.sum())
        if len(present) > 1 and onehot.shape[1] > 0:
            clf = LogisticRegression(max_iter=1000, random_state=self.seed).fit(onehot, labels)
            coef, intercept = np.atleast_2d(clf.coef_), np.atleast_1d(clf.intercept_)
            if len(present) == 2:  # one row of coefficients, for the second class
                coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0], intercept[0]]) / 2
            self.group_coef[present], self.group_intercept = coef, np.full(n_groups, -30.0)
            self.group_intercept[present] = intercept

    def _onehot(self, codes: np.ndarray) -> np.ndarray:
        codes = np.atleast_2d(codes)
        parts = [np.eye(c)[codes[:, i]] for i, c in enumerate(self.space.cardinalities)]
        return np.concatenate(parts, 1) if parts else np.zeros((len(codes), 0))

    def group_probabilities(self, codes: np.ndarray) -> np.ndarray:
        """(B, groups) probabilities of each profile's group."""
        logits = self._onehot(codes) @ self.group_coef.T + self.group_intercept
        p = np.exp(logits - logits.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True)).astype(np.float32)

    def user_inputs(self, codes: np.ndarray, histories) -> dict[str, Tensor]:
        x = super().user_inputs(codes, histories)
        x["groups"] = torch.as_tensor(self.group_probabilities(np.asarray(codes)).reshape(len(histories), -1))
        return x

    # --- training ------------------------------------------------------------------------

    def loss(self, x: dict[str, Tensor], items: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """BCE of the combined logit and of each expert's, plus the teacher-selected distillation."""
        users = self.net.users(x)
        total = masked_mean(bce(self.net.logits(users, items), target), mask)
        if self.mode in ("cold", "warm"):  # one expert: nothing to combine or distil
            return total
        cold_logit = self.net.logits(users, items, "cold")
        warm_logit = self.net.logits(users, items, "warm")
        total = total + masked_mean(bce(cold_logit, target), mask) + masked_mean(bce(warm_logit, target), mask)
        if self.alpha > 0:
            total = total + self.alpha * masked_mean(distillation(cold_logit, warm_logit, target), mask)
        return total

    def gate_value(self, ctx: Context) -> float:
        """How much the warm expert weighs for this request (1.0: warm only); NaN without a gate."""
        if self.mode != "gate":
            return float("nan")
        x = self.request_inputs([ctx])
        with torch.no_grad():
            return float(torch.sigmoid(self.net.gate(x["state"]))[0, 0])


def distillation(cold_logit: Tensor, warm_logit: Tensor, target: Tensor) -> Tensor:
    """Per sample: BCE of the cold expert's logit against the warm expert's (detached)
    probability where the warm expert's own loss is lower (the teacher selector), else 0."""
    with torch.no_grad():
        teacher = (bce(warm_logit, target) < bce(cold_logit, target)).to(cold_logit.dtype)
        soft = torch.sigmoid(warm_logit)
    return teacher * bce(cold_logit, soft)


class ColdWarmNoGate(ColdWarmNet):
    """Ablation: the two experts averaged, no gate."""

    name = "coldwarm-nogate"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"mode": "average", **kwargs})


class ColdWarmNoDKD(ColdWarmNet):
    """Ablation: no dynamic knowledge distillation (alpha = 0)."""

    name = "coldwarm-nodkd"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"alpha": 0.0, **kwargs})


class ColdWarmNoBias(ColdWarmNet):
    """Ablation: no bias net."""

    name = "coldwarm-nobias"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"bias": False, **kwargs})


class ColdWarmColdOnly(ColdWarmNet):
    """Ablation: the cold-start expert alone (profile and group; no actions, gate or distillation)."""

    name = "coldwarm-coldonly"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"mode": "cold", **kwargs})
