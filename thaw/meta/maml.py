"""The one meta-learning engine: functional MAML over any torch module.

Parameters are split into *fast* ones, adapted per task in the inner loop (MeLU adapts the
decision layers only), and *shared* ones, which only the outer loop moves. Everything is
functional (``torch.func.functional_call``): adapted weights are new tensors computed from the
initial ones, never written back into the module, so the meta-gradient cannot be cut the way
``load_state_dict`` cuts it in public MeLU code. A batch of tasks, padded and masked to common
support and query sizes, runs as one ``vmap``-ed computation instead of a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from thaw.models.neural import LossFn, TaskBatch, Trainer, inputs

Params = dict[str, Tensor]
Batch = Mapping[str, Tensor]
"""Model inputs keyed by name, plus "target" and "mask", all with the rows as leading dim."""


class MAML:
    """Second- or first-order MAML with an inner loop on the parameters ``adapt`` selects.

    ``adapt`` is a predicate on parameter names (or a collection of names); ``None`` adapts
    everything (plain MAML). ``first_order=True`` is FOMAML: the inner gradients are treated
    as constants, which drops exactly the second-order term of the meta-gradient.
    """

    def __init__(self, model: nn.Module, loss: LossFn, *,
                 adapt: Callable[[str], bool] | Sequence[str] | None = None,
                 inner_steps: int = 1, inner_lr: float = 0.01, first_order: bool = False) -> None:
        if inner_steps < 0:
            raise ValueError("inner_steps must be >= 0")
        self.model, self.loss = model, loss
        self.inner_steps, self.inner_lr, self.first_order = inner_steps, inner_lr, first_order
        if adapt is None:
            chosen = lambda name: True  # noqa: E731
        elif callable(adapt):
            chosen = adapt
        else:
            names = set(adapt)
            chosen = names.__contains__
        self.fast_names = [n for n, _ in model.named_parameters() if chosen(n)]
        if not self.fast_names:
            raise ValueError("no parameter selected for adaptation")

    # --- parameters ---------------------------------------------------------------------

    def split_params(self) -> tuple[Params, Params]:
        """The module's live parameters as (fast, shared) dicts: gradients flow into them."""
        fast, shared = {}, {}
        for name, p in self.model.named_parameters():
            (fast if name in self.fast_names else shared)[name] = p
        return fast, shared

    # --- functional pieces ---------------------------------------------------------------

    def forward(self, fast: Params, shared: Params, batch: Batch) -> Tensor:
        return functional_call(self.model, {**shared, **fast}, (inputs(batch),))

    def batch_loss(self, fast: Params, shared: Params, batch: Batch) -> Tensor:
        return self.loss(self.forward(fast, shared, batch), batch["target"], batch["mask"])

    def adapt(self, fast: Params, shared: Params, support: Batch,
              steps: int | None = None) -> Params:
        """Fast weights after ``steps`` SGD steps on one task's support (differentiable)."""
        step_grad = grad(self.batch_loss)
        for _ in range(self.inner_steps if steps is None else steps):
            grads = step_grad(fast, shared, support)
            if self.first_order:
                grads = {k: g.detach() for k, g in grads.items()}
            fast = {k: fast[k] - self.inner_lr * grads[k] for k in fast}
        return fast

    def query_loss(self, fast: Params, shared: Params, support: Batch, query: Batch) -> Tensor:
        """One task: adapt on the support, then the loss on the query."""
        return self.batch_loss(self.adapt(fast, shared, support), shared, query)

    def task_losses(self, tasks: TaskBatch, fast: Params | None = None,
                    shared: Params | None = None) -> Tensor:
        """Query loss of every task in the batch, shape (T,), as one vectorised computation."""
        if fast is None or shared is None:
            live_fast, live_shared = self.split_params()
            fast = live_fast if fast is None else fast
            shared = live_shared if shared is None else shared
        per_task = vmap(self.query_loss, in_dims=(None, None, 0, 0), randomness="same")
        return per_task(fast, shared, tasks.support, tasks.query)

    def task_losses_looped(self, tasks: TaskBatch, fast: Params | None = None,
                           shared: Params | None = None) -> Tensor:
        """The same numbers as ``task_losses`` with a Python loop over tasks (for checks)."""
        live_fast, live_shared = self.split_params()
        fast = live_fast if fast is None else fast
        shared = live_shared if shared is None else shared
        out = []
        for t in range(len(tasks)):
            support = {k: v[t] for k, v in tasks.support.items()}
            query = {k: v[t] for k, v in tasks.query.items()}
            out.append(self.query_loss(fast, shared, support, query))
        return torch.stack(out)

    def detached_params(self, fast: Params | None) -> tuple[Params, Params]:
        """(fast, shared) cut from the graph, for test time; ``fast`` defaults to the module's."""
        live_fast, shared = self.split_params()
        start = live_fast if fast is None else fast
        return ({k: v.detach() for k, v in start.items()},
                {k: v.detach() for k, v in shared.items()})

    def adapted(self, supports: Batch, fast: Params | None = None,
                steps: int | None = None) -> Params:
        """Test time: fast weights adapted to each of T new tasks' supports, (T, ...) each.

        An all-masked support has zero gradient, so that task keeps the initialisation.
        """
        start, shared = self.detached_params(fast)
        per_task = vmap(lambda s: self.adapt(start, shared, s, steps), randomness="same")
        with torch.enable_grad():
            out = per_task(dict(supports))
        return {k: v.detach() for k, v in out.items()}

    def predict(self, fast: Params, batch: Batch) -> Tensor:
        """Outputs (T, rows) for T tasks' rows, each with its own fast weights (T, ...)."""
        _, shared = self.detached_params(None)
        with torch.no_grad():
            return vmap(self.forward, in_dims=(0, None, 0))(
                {k: v.detach() for k, v in fast.items()}, shared, inputs(batch))

    def adapted_one(self, support: Batch, fast: Params | None = None, steps: int | None = None) -> Params:
        """``adapted`` for one task (support rows unbatched, weights returned unbatched), by plain
        autograd: the same weights to float rounding, in half the time of a one-task ``vmap``
        (a service adapts to one user per request). At test time the inner gradients are
        constants either way, so first- and second-order MAML reach the same weights."""
        current, shared = self.detached_params(fast)
        with torch.enable_grad():
            for _ in range(self.inner_steps if steps is None else steps):
                leaves = {k: v.detach().requires_grad_(True) for k, v in current.items()}
                loss = self.batch_loss(leaves, shared, support)
                grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                current = {k: leaves[k].detach() if g is None else (leaves[k] - self.inner_lr * g).detach()
                           for k, g in zip(leaves, grads, strict=True)}
        return current

    def predict_one(self, fast: Params, batch: Batch) -> Tensor:
        """``predict`` for one task's rows with its unbatched fast weights, without ``vmap``."""
        _, shared = self.detached_params(None)
        with torch.no_grad():
            return self.forward({k: v.detach() for k, v in fast.items()}, shared, batch)


class MetaTrainer(Trainer):
    """The outer loop: Adam on the initial (and shared) parameters, gradient clipping."""

    def __init__(self, maml: MAML, params: Sequence[Tensor] | None = None, *, lr: float = 1e-3,
                 clip: float | None = 5.0) -> None:
        super().__init__(maml.model.parameters() if params is None else params, lr=lr, clip=clip)
        self.maml = maml
