"""The MAML engine against hand computation and finite differences."""

import numpy as np
import pytest
import torch
from torch import nn

from thaw.meta.maml import MAML
from thaw.models.neural import TaskBatch, masked_mse

DOUBLE = torch.float64


class Tiny(nn.Module):
    """A shared body and an adapted head, in float64 so finite differences are exact enough."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(3, 3).double()
        self.head = nn.Linear(3, 1).double()

    def forward(self, x):
        return self.head(torch.tanh(self.body(x["x"]))).squeeze(-1)


def make_tasks(n_tasks=4, support=5, query=6, pad_to=None, seed=0):
    g = torch.Generator().manual_seed(seed)

    def part(n):
        size = pad_to or n
        x = torch.randn(n_tasks, size, 3, generator=g, dtype=DOUBLE)
        y = torch.randn(n_tasks, size, generator=g, dtype=DOUBLE)
        mask = torch.zeros(n_tasks, size, dtype=DOUBLE)
        mask[:, :n] = 1.0
        return {"x": x, "target": y, "mask": mask}

    return TaskBatch(part(support), part(query))


def head_only(name):
    return name.startswith("head")


def test_one_inner_step_is_a_hand_computed_sgd_step():
    model = Tiny()
    maml = MAML(model, masked_mse, adapt=head_only, inner_steps=1, inner_lr=0.1)
    fast, shared = maml.split_params()
    tasks = make_tasks(n_tasks=1)
    support = {k: v[0] for k, v in tasks.support.items()}
    adapted = maml.adapt(fast, shared, support)
    with torch.no_grad():
        h = torch.tanh(model.body(support["x"]))
        residual = (h @ model.head.weight.T).squeeze(-1) + model.head.bias - support["target"]
        n = len(residual)
        grad_w = 2.0 / n * residual @ h
        grad_b = 2.0 / n * residual.sum()
    assert torch.allclose(adapted["head.weight"], model.head.weight - 0.1 * grad_w)
    assert torch.allclose(adapted["head.bias"], model.head.bias - 0.1 * grad_b)
    # Adapting never writes into the module: its weights are the initialisation still.
    assert not torch.allclose(adapted["head.weight"], model.head.weight)


def meta_loss_at(maml, flat, names, shapes, tasks):
    """Meta-loss as a function of a flat vector of all parameters, for finite differences."""
    params, offset = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        size = int(np.prod(shape))
        params[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    fast = {k: v for k, v in params.items() if k in maml.fast_names}
    shared = {k: v for k, v in params.items() if k not in maml.fast_names}
    return maml.task_losses(tasks, fast, shared).mean()


@pytest.mark.parametrize("adapt", [head_only, None])
def test_second_order_meta_gradient_matches_finite_differences(adapt):
    model = Tiny()
    maml = MAML(model, masked_mse, adapt=adapt, inner_steps=2, inner_lr=0.3)
    tasks = make_tasks()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    maml.task_losses(tasks).mean().backward()
    analytic = torch.cat([p.grad.reshape(-1) for _, p in model.named_parameters()])
    eps = 1e-6
    numeric = torch.zeros_like(flat)
    for i in range(len(flat)):
        up, down = flat.clone(), flat.clone()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (meta_loss_at(maml, up, names, shapes, tasks)
                      - meta_loss_at(maml, down, names, shapes, tasks)) / (2 * eps)
    assert torch.allclose(analytic, numeric, atol=1e-7, rtol=1e-5)
    assert analytic.abs().max() > 1e-3  # the meta-gradient reaches the initialisation


def test_first_order_drops_exactly_the_second_order_term():
    tasks = make_tasks(n_tasks=1)
    support = {k: v[0] for k, v in tasks.support.items()}
    query = {k: v[0] for k, v in tasks.query.items()}
    fo_model, so_model = Tiny(), Tiny()
    fo = MAML(fo_model, masked_mse, adapt=head_only, inner_steps=1, inner_lr=0.3, first_order=True)
    so = MAML(so_model, masked_mse, adapt=head_only, inner_steps=1, inner_lr=0.3)
    fo.task_losses(tasks).mean().backward()
    so.task_losses(tasks).mean().backward()
    # FOMAML's gradient on the head is the query gradient at the adapted weights.
    fast, shared = fo.split_params()
    adapted = {k: v.detach().requires_grad_(True) for k, v in fo.adapt(fast, shared, support).items()}
    at_adapted = torch.autograd.grad(fo.batch_loss(adapted, {k: v.detach() for k, v in shared.items()}, query),
                                     list(adapted.values()))
    assert torch.allclose(fo_model.head.weight.grad, at_adapted[0])
    assert torch.allclose(fo_model.head.bias.grad, at_adapted[1])
    # Second order differs by the Hessian term: (I - lr H) applied to that same gradient.
    sfast, sshared = so.split_params()
    def support_loss(w, b):
        return so.batch_loss({"head.weight": w, "head.bias": b},
                             {k: v.detach() for k, v in sshared.items()}, support)
    w, b = so_model.head.weight.detach(), so_model.head.bias.detach()
    hess = torch.autograd.functional.hessian(support_loss, (w, b))
    g = torch.cat([at_adapted[0].reshape(-1), at_adapted[1].reshape(-1)])
    blocks = [[hess[i][j].reshape(w.numel() if i == 0 else 1, w.numel() if j == 0 else 1)
               for j in range(2)] for i in range(2)]
    h = torch.cat([torch.cat(row, dim=1) for row in blocks], dim=0)
    expected = g - 0.3 * h @ g
    got = torch.cat([so_model.head.weight.grad.reshape(-1), so_model.head.bias.grad.reshape(-1)])
    assert torch.allclose(got, expected, atol=1e-10)
    assert not torch.allclose(got, g)


def test_masked_padding_changes_nothing():
    plain = make_tasks(seed=3)
    padded = make_tasks(seed=3, pad_to=12)
    # Same real rows, then garbage rows with mask 0.
    for part_plain, part_padded in ((plain.support, padded.support), (plain.query, padded.query)):
        n = part_plain["x"].shape[1]
        for k in ("x", "target"):
            part_padded[k][:, :n] = part_plain[k]
            part_padded[k][:, n:] = 1e3
    results = []
    for tasks in (plain, padded):
        model = Tiny()
        maml = MAML(model, masked_mse, adapt=head_only, inner_steps=2, inner_lr=0.1)
        loss = maml.task_losses(tasks)
        loss.mean().backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.allclose(a, b)


@pytest.mark.parametrize("first_order", [False, True])
def test_vmapped_and_looped_tasks_give_the_same_losses_and_gradients(first_order):
    tasks = make_tasks(n_tasks=6, pad_to=8)
    tasks.support["mask"][2, 3:] = 0.0  # tasks of different sizes
    tasks.query["mask"][4, 1:] = 0.0
    grads = []
    losses = []
    for looped in (False, True):
        model = Tiny()
        maml = MAML(model, masked_mse, adapt=head_only, inner_steps=3, inner_lr=0.2,
                    first_order=first_order)
        loss = maml.task_losses_looped(tasks) if looped else maml.task_losses(tasks)
        loss.mean().backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.allclose(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_test_time_adaptation_matches_training_adaptation_and_keeps_the_module():
    model = Tiny()
    maml = MAML(model, masked_mse, adapt=head_only, inner_steps=2, inner_lr=0.2)
    tasks = make_tasks(n_tasks=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batched = maml.adapted(tasks.support)
    fast, shared = maml.split_params()
    for t in range(3):
        one = maml.adapt(fast, shared, {k: v[t] for k, v in tasks.support.items()})
        for k in one:
            assert torch.allclose(batched[k][t], one[k])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # An all-masked support leaves the initialisation as it is.
    empty = {k: v.clone() for k, v in tasks.support.items()}
    empty["mask"].zero_()
    kept = maml.adapted(empty)
    assert torch.allclose(kept["head.weight"][0], model.head.weight)


def test_nothing_selected_for_adaptation_is_an_error():
    with pytest.raises(ValueError, match="no parameter"):
        MAML(Tiny(), masked_mse, adapt=lambda name: False)
