"""Wide & Deep (Cheng et al. 2016) and DeepFM (Guo et al. 2017) on thaw's features.

HML's baselines: trained on warm users' (profile, item features) rows, no per-user
adaptation, so a cold user is scored from their profile alone. They share MeLU's field
embeddings and training rows (thaw/models/features_net.py), so the comparison isolates
adaptation, not plumbing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thaw.data.features import FeatureSpace
from thaw.models.features_net import FeatureModel, FeatureNet


class FirstOrder(nn.Module):
    """A linear term per field value: the 'wide' part, and DeepFM's first-order part."""

    def __init__(self, space: FeatureSpace, item_ids: bool = True) -> None:
        super().__init__()
        self.user_fields = nn.ModuleList(nn.Embedding(c, 1) for c in space.cardinalities)
        self.genre = nn.Linear(space.n_genres, 1, bias=False)
        self.year = nn.Embedding(space.n_years, 1)
        self.item = nn.Embedding(len(space.item_code) + 1, 1, padding_idx=0) if item_ids else None
        with torch.no_grad():  # a linear model starts at zero, not at unit-variance noise
            for module in [*self.user_fields, self.genre, self.year, self.item]:
                if module is not None:
                    module.weight.zero_()

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        return self.item_terms(x) + self.user_terms(x["user"])

    def item_terms(self, x: dict[str, Tensor]) -> Tensor:
        total = self.genre(x["genres"]).squeeze(-1) + self.year(x["year"]).squeeze(-1)
        if self.item is not None:
            total = total + self.item(x["item"]).squeeze(-1)
        return total

    def user_terms(self, codes: Tensor) -> Tensor:
        total = torch.zeros(codes.shape[:-1])
        for i, emb in enumerate(self.user_fields):
            total = total + emb(codes[..., i]).squeeze(-1)
        return total


class WideDeepNet(FeatureNet):
    """Deep MLP over the field embeddings plus a wide linear model over the raw features."""

    def __init__(self, space: FeatureSpace, dim: int = 16, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__(space, dim, hidden)
        self.wide = FirstOrder(space)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        return super().forward(x) + self.wide(x)

    def item_side(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return super().item_side(x) | {"wide": self.wide.item_terms(x)}

    def one_user_extra(self, user: list[Tensor], codes: Tensor, side: dict[str, Tensor]) -> Tensor:
        return side["wide"] + self.wide.user_terms(codes)


class DeepFMNet(FeatureNet):
    """First-order terms + factorisation-machine pairwise interactions + a deep MLP."""

    def __init__(self, space: FeatureSpace, dim: int = 16, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__(space, dim, hidden)
        self.linear = FirstOrder(space)
        # The pairwise term sums products of every pair of fields: with unit-variance
        # embeddings it starts at +-20 and training diverges, so embeddings start small.
        with torch.no_grad():
            for module in [*self.user_fields, self.year, self.item, self.genre]:
                if module is not None:
                    module.weight.normal_(0.0, 0.01)
            if self.item is not None:
                self.item.weight[0].zero_()

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        fields = self.fields(x)
        pairwise = _pairs(torch.stack(fields, dim=-2))  # over (..., n_fields, dim)
        deep = self.out(self.decision(torch.cat(fields, dim=-1))).squeeze(-1)
        return self.linear(x) + pairwise + deep

    def item_side(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """With the pairwise term split too: with U and I the sums of the user's and the
        item's field embeddings, the sum over pairs of fields is the pairs within the user's
        fields, those within the item's, and U . I."""
        stacked = torch.stack(self.item_fields(x), dim=-2)
        return super().item_side(x) | {"linear": self.linear.item_terms(x), "sum": stacked.sum(-2),
                                       "pairs": _pairs(stacked)}

    def one_user_extra(self, user: list[Tensor], codes: Tensor, side: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack(user, dim=-2)
        return (side["linear"] + self.linear.user_terms(codes) + side["pairs"] + _pairs(stacked)
                + side["sum"] @ stacked.sum(-2))


class WideDeep(FeatureModel):
    """Wide & Deep: a deep MLP over field embeddings plus a wide linear part."""

    name = "widedeep"
    main_job_item_cold = True

    def network(self, space: FeatureSpace) -> FeatureNet:
        return WideDeepNet(space, self.dim, self.hidden)


class DeepFM(FeatureModel):
    """DeepFM: first-order terms, FM pairwise interactions and a deep MLP."""

    name = "deepfm"
    main_job_item_cold = True

    def network(self, space: FeatureSpace) -> FeatureNet:
        return DeepFMNet(space, self.dim, self.hidden)


def _pairs(stacked: Tensor) -> Tensor:
    """The factorisation machine's sum over pairs of fields of their embeddings' dot products,
    (..., n_fields, dim) -> (...)."""
    return 0.5 * (stacked.sum(-2).pow(2) - stacked.pow(2).sum(-2)).sum(-1)
