"""MeLU (Lee et al., KDD 2019) and its family on thaw's features: maml, fomaml, finetune.

One network for all of them, thaw's feature network (thaw/models/features_net.py): embeddings
of the user's profile fields and of the item's genres and release year, then a decision MLP.
MeLU meta-learns the whole network but adapts only the decision layers per user; ``maml``
adapts everything; ``fomaml`` is its first-order version; ``finetune`` trains the same network
the ordinary way and then fine-tunes the decision layers on each cold user's support with
MeLU's steps and learning rate, which asks whether meta-learning beats plain pre-training plus
fine-tuning. Items enter only through their features, so new items are scored like old ones.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from thaw.compute import one_thread
from thaw.meta.maml import MAML, Params
from thaw.models.base import Context
from thaw.models.features_net import FeatureModel
from thaw.models.neural import TaskBatch, Trainer, inputs, pad_and_stack, share_of

DECISION_LAYERS = ("decision.", "out.")
ADAPTED_CACHE = 64  # one-user adaptations kept per model (FeatureMetaLearner.adapted_weights)


def is_decision_layer(name: str) -> bool:
    return name.startswith(DECISION_LAYERS)


class FeatureMetaLearner(FeatureModel):
    """The feature network meta-learned: fit by meta-training, score by adapting to the support.

    The inner loop adapts the decision layers (or every parameter, ``adapt_all``) to a user's
    support for ``inner_steps`` steps of size ``inner_lr``; ``first_order`` drops the
    second-order term of the meta-gradient. Everything else is ``FeatureModel``'s.
    """

    _transient = ("maml", "_adapted")  # re-created by _rebuild (maml), or a cache (_adapted)
    adapts_once = True
    """One initialisation adapted per user (``adaptation``); HML chooses among several."""

    def __init__(self, *, adapt_all: bool = False, first_order: bool = False, inner_steps: int = 2,
                 inner_lr: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        self.adapt_all, self.first_order = adapt_all, first_order
        self.inner_steps, self.inner_lr = inner_steps, inner_lr

    def _rebuild(self) -> None:
        """``FeatureModel``'s parts, and the meta-learning engine over the network."""
        super()._rebuild()
        if getattr(self, "data", None) is None:  # never fitted
            return
        self.maml = MAML(self.net, self.loss(), adapt=None if self.adapt_all else is_decision_layer,
                         inner_steps=self.inner_steps, inner_lr=self.inner_lr,
                         first_order=self.first_order)

    def _train_step(self, trainer: Trainer, batch: TaskBatch) -> float:
        part, weight = share_of(batch)
        return trainer.step(None if part is None else self.maml.task_losses(part).mean(), weight)

    # --- scoring -------------------------------------------------------------------------

    def adapted_weights(self, contexts: Sequence[Context]) -> Params:
        """Fast weights per user, (T, ...): the initialisation adapted on each support (one
        user's come from ``adaptation``, kept for their next requests)."""
        if len(contexts) == 1:
            return {k: v[None] for k, v in self.adaptation(contexts[0]).fast.items()}
        return self.maml.adapted(pad_and_stack([self._support_rows(c) for c in contexts]))

    def adaptation(self, ctx: Context) -> Adaptation:
        """One user's adapted weights, kept for the next ``ADAPTED_CACHE`` different supports,
        keyed by the support's rows and the network's parameter versions (torch counts every
        in-place change, so a training step or a load makes them stale): a request asks for
        the same user's adaptation twice (its scores, then the stack's ``confidence``), and a
        service asks again until the user's next event."""
        support = {k: v[0] for k, v in pad_and_stack([self._support_rows(ctx)]).items()}
        digest = hashlib.blake2b(digest_size=16)
        for name in sorted(support):
            value = support[name]
            digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.detach().contiguous().numpy().tobytes())
        key = (tuple(p._version for p in self.net.parameters()), digest.digest())
        cache = getattr(self, "_adapted", None)
        if cache is None:
            cache = self._adapted = OrderedDict()
        found = cache.get(key)
        if found is None:
            found = cache[key] = Adaptation(self.maml.adapted_one(support), support)
            while len(cache) > ADAPTED_CACHE:
                cache.popitem(last=False)
        return found

    def _chunk_outputs(self, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        rows = self._candidate_rows(contexts, items)
        if len(contexts) == 1 and self.adapts_once:
            # One user: no vmap, and the support's rows ride along in the same forward pass,
            # so ``confidence`` finds their outputs ready.
            one, n = self.adaptation(contexts[0]), len(items[0])
            both = {k: torch.cat([v[0], one.support[k]]) for k, v in inputs(rows).items()}
            values = self.maml.predict_one(one.fast, both)
            one.support_fit = values[rows["mask"].shape[1]:]
            return [values[:n].numpy().astype(np.float64)]
        values = self.maml.predict(self.adapted_weights(contexts), rows).numpy().astype(np.float64)
        return [values[t, :len(i)] for t, i in enumerate(items)]

    @one_thread()
    def confidence(self, ctx: Context, scores: np.ndarray) -> float:
        """``FeatureModel.confidence`` (minus the loss on the adapted support), from the
        outputs on the support that scoring this user left in their ``adaptation``."""
        if len(ctx.history) == 0 or not self.adapts_once:
            return super().confidence(ctx, scores)
        one = self.adaptation(ctx)
        if one.support_fit is None:
            one.support_fit = self.maml.predict_one(one.fast, one.support)
        return -float(self.loss()(one.support_fit, one.support["target"], one.support["mask"]))

    def _support_fit(self, ctx: Context, support: dict[str, Tensor]) -> Tensor:
        """The outputs on the user's support rows after adapting to them."""
        return self.maml.predict(self.adapted_weights([ctx]), support)[0]


@dataclass
class Adaptation:
    """One user's adapted (unbatched) fast weights and support rows, and once computed the
    outputs on those rows, which the user's ``confidence`` reads."""

    fast: Params
    support: dict[str, Tensor]
    support_fit: Tensor | None = None


class MeLU(FeatureMetaLearner):
    """MeLU: meta-learned network, decision layers adapted per user."""

    name = "melu"
    main_job_item_cold = True


class FullMAML(FeatureMetaLearner):
    """MAML on the same network with every parameter adapted per user."""

    name = "maml"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"adapt_all": True, **kwargs})


class FirstOrderMAML(FeatureMetaLearner):
    """First-order MAML: like ``maml`` but the inner gradients are constants."""

    name = "fomaml"
    main_job_item_cold = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"adapt_all": True, "first_order": True, **kwargs})


class FineTune(FeatureMetaLearner):
    """The MeLU network trained normally on warm users, fine-tuned per cold user like MeLU."""

    name = "finetune"
    _train_step = FeatureModel._train_step  # ordinary training; adaptation only at score time
