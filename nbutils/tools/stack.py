"""Stacked runs: K training runs of one shape trained as one model, sharing every kernel.

The patch MLP's training step is bound by latency, not arithmetic: over a hundred small kernels, with
the GPU mostly idle between them. K runs of the same shape cost little more than one when each kernel
does all K at once. :class:`StackedModel` holds K copies of a model, their parameters and buffers
stacked along a new first axis (``torch.func.stack_module_state``), and runs them as one
(``functional_call`` under ``vmap`` with ``randomness="different"``: each member draws its own
dropout masks; BatchNorm keeps each member's running statistics, which eval mode uses).

Each member keeps what makes it its own run: its seed (initial weights, data order), its init scheme,
its learning rate and weight decay (:class:`StackedOptimizer`), and its scheduler's decisions
(:class:`MemberSchedulers`: a cut in one member changes only that member). Its dropout masks are its
own, but vmap draws every member's from the one global generator, so they are not the masks its
single run would draw: with dropout on, a stacked run is a run of the same settings, not a replay of
the single run of its seed (the tests that compare the two turn dropout off). The members share the
architecture, the batch size, the number of epochs and the optimizer's type; each member's history
records the stack's epoch time as its ``seconds``.
:class:`StackTrainer` is the fast path's trainer for a stack, CUDA graphs and bf16 included, and
:func:`train_stack` trains runs of the sweep this way, through ``train_ch3``, keeping what each
would have recorded alone.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..checkpoint import Checkpoint
from ..fast import keep_tensor, precision_context
from ..metrics import TrainingDiverged
from ..train import epoch_record, split, step_scheduler, train_ch3
from .protocol import as_validation, keep_if_best
from .recipe import RecipeTrainer, recipe_hooks

__all__ = ["MemberSchedulers", "StackLoader", "StackTrainer", "StackedModel", "StackedOptimizer",
           "train_stack"]


def key(name):  # a dotted parameter name as an nn.Module attribute
    return name.replace(".", "__")


class StackedModel(nn.Module):
    """K copies of one architecture as one module: ``forward(X)`` takes ``(K, B, ...)`` and returns
    ``(K, B, classes)``, member k computing what ``nets[k]`` computes on ``X[k]``."""

    def __init__(self, nets):
        super().__init__()
        params, buffers = stack_module_state(nets)
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterDict({key(n): nn.Parameter(p.detach()) for n, p in params.items()})
        for n, b in buffers.items():
            self.register_buffer(key(n), b)
        self.size = len(nets)
        # The architecture without weights (on the meta device), not a submodule: the stacked
        # tensors above are its weights.
        object.__setattr__(self, "template", copy.deepcopy(nets[0]).to("meta"))

    def train(self, mode=True):
        self.template.train(mode)
        return super().train(mode)

    def tensors(self):
        return ({n: self.stacked[key(n)] for n in self.param_names},
                {n: getattr(self, key(n)) for n in self.buffer_names})

    def one(self, params, buffers, x):
        return functional_call(self.template, (params, buffers), (x,))

    def forward(self, X):
        return vmap(self.one, randomness="different")(*self.tensors(), X)

    def member_state(self, k):
        """Member ``k``'s weights and buffers as a state dict of its own architecture."""
        params, buffers = self.tensors()
        return {n: t[k].detach().clone() for n, t in {**params, **buffers}.items()}


class StackedOptimizer(torch.optim.Optimizer):
    """Adam, AdamW or SGD over stacked parameters, each member with its own learning rate and weight
    decay (tensors of shape (K,) in the one parameter group), in tensor ops only, so that a CUDA graph
    can capture its step. The update is torch's, member by member: L2 decay added to the gradient
    (Adam, SGD) or decoupled (AdamW)."""

    KINDS = {torch.optim.Adam: "adam", torch.optim.AdamW: "adamw", torch.optim.SGD: "sgd"}

    def __init__(self, params, kind, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, device="cpu"):
        if kind not in self.KINDS.values():
            raise ValueError(f"a stack trains with one of {sorted(self.KINDS.values())}, got {kind!r}")
        super().__init__(params, dict(lr=torch.tensor([float(v) for v in lr], device=device),
                                      weight_decay=torch.tensor([float(v) for v in weight_decay],
                                                                device=device),
                                      betas=betas, eps=eps, kind=kind, capturable=True))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                per_member = (-1,) + (1,) * (p.dim() - 1)
                lr, wd = group["lr"].view(per_member), group["weight_decay"].view(per_member)
                g = p.grad
                if group["kind"] == "adamw":
                    p.mul_(1 - lr * wd)
                else:
                    g = g + wd * p
                if group["kind"] == "sgd":
                    p.sub_(lr * g)
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=torch.zeros((), device=p.device),
                                 exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                state["exp_avg"].lerp_(g, 1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (state["exp_avg_sq"].sqrt() / (1 - b2 ** state["step"]).sqrt()).add_(group["eps"])
                p.sub_(lr / (1 - b1 ** state["step"]) * state["exp_avg"] / denom)

    def load_state_dict(self, state_dict):
        """Keep the lr and weight-decay tensors (a CUDA graph points at them); copy the values in."""
        kept = [(g["lr"], g["weight_decay"]) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (lr, decay) in zip(self.param_groups, kept):
            keep_tensor(group, "lr", lr)
            keep_tensor(group, "weight_decay", decay)


class MemberSchedulers:
    """Each member's own scheduler, torch's, driving the member's entry of the stacked lr tensor.

    A scheduler works on one optimizer's learning rate, so each member's runs on a shadow optimizer
    that holds only that member's rate; after each step, the shadows' rates are copied into the lr
    tensor that the stack's update (and its CUDA graph) reads. ``makers[k]`` builds member k's
    scheduler from its shadow optimizer; a member without one (None) keeps its rate, or whatever a
    per-step hook writes there (the recipe's warm-up and cosine)."""

    def __init__(self, optimizer, makers):
        self.lr = optimizer.param_groups[0]["lr"]
        self.shadows = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(lr))
                        for lr in self.lr]
        self.schedulers = [make(shadow) if make else None for make, shadow in zip(makers, self.shadows)]

    def step(self, losses):
        for k, (scheduler, shadow) in enumerate(zip(self.schedulers, self.shadows)):
            if scheduler is not None:
                shadow.step()  # nothing to update: it keeps torch from warning that no step came first
                step_scheduler(scheduler, losses[k])
                self.lr[k] = shadow.param_groups[0]["lr"]

    def state_dict(self):
        return [dict(lr=s.param_groups[0]["lr"], scheduler=c.state_dict() if c else None)
                for s, c in zip(self.shadows, self.schedulers)]

    def load_state_dict(self, states):
        for state, shadow, scheduler in zip(states, self.shadows, self.schedulers):
            shadow.param_groups[0]["lr"] = state["lr"]  # the exact float: the stack's is float32
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])


class Generators(list):
    """The members' shuffling generators, saved and put back as one: a checkpoint saves a loader's
    ``generator`` (:meth:`~nbutils.checkpoint.Checkpoint.save`), and a stack's is all of theirs."""

    def get_state(self):
        return [g.get_state() for g in self]

    def set_state(self, states):
        for generator, state in zip(self, states):
            generator.set_state(state)


class StackLoader:
    """K members' DeviceLoaders of one split as one: batch ``(K, B, 1, 28, 28)``, member k's images
    in the order its own loader would serve them (its own subset, normalisation and seeded
    shuffling)."""

    def __init__(self, loaders):
        first = loaders[0]
        if len({(len(d.labels), d.batch_size, d.shuffle, d.drop_last) for d in loaders}) != 1:
            raise ValueError("stacked runs need the same number of images and the same batches")
        self.device, self.batch_size = first.device, first.batch_size
        self.shuffle, self.drop_last, self.size = first.shuffle, first.drop_last, len(first.labels)
        self.split = split(first)  # "validation" under the honest protocol
        self.images = torch.stack([d.images for d in loaders])  # (K, N, 1, 28, 28) uint8
        self.labels = torch.stack([d.labels for d in loaders])
        self.generator = Generators(d.generator for d in loaders)
        shape = (len(loaders), 1, 1, 1, 1)
        self.mean = torch.tensor([d.mean for d in loaders], device=self.device).view(shape)
        self.std = torch.tensor([d.std for d in loaders], device=self.device).view(shape)
        self.members = torch.arange(len(loaders), device=self.device)[:, None]

    def __len__(self):
        return self.size // self.batch_size if self.drop_last else -(-self.size // self.batch_size)

    def batch_indices(self):
        orders = torch.stack([torch.randperm(self.size, generator=g).to(self.device) if self.shuffle
                              else torch.arange(self.size, device=self.device)
                              for g in self.generator])
        for b in range(len(self)):
            yield orders[:, b * self.batch_size:(b + 1) * self.batch_size]

    def batch(self, idx):
        images = self.images[self.members, idx]
        return (images.float() / 255 - self.mean) / self.std, self.labels[self.members, idx]

    def index_buffer(self):
        return torch.zeros(len(self.generator), self.batch_size, dtype=torch.long, device=self.device)


class StackTrainer(RecipeTrainer):
    """The fast path's trainer for a :class:`StackedModel` on :class:`StackLoader` data: the same
    step (with the recipe's hooks, if any), captured the same way, with one loss sum, hit count and
    first bad batch per member. ``loss`` must keep each example's loss (``reduction="none"``).

    As ``train_ch3``'s trainer it keeps each member's own run, which one scheduler and one record an
    epoch cannot hold:

    * ``histories``: each member's records, what ``train_ch3`` records for its single run;
    * ``schedulers``: each member's scheduler (:class:`MemberSchedulers`), stepped on its own
      evaluation loss;
    * ``diverged``: where a member's loss became NaN or infinite (its epoch and first bad batch, or
      -1 where only the evaluation showed it); the others train on, as members share no parameter;
    * ``best``: where the evaluation is the validation split (the honest protocol, as its loader
      says), each member's chosen epoch and weights (:func:`~nbutils.tools.protocol.keep_if_best`).

    Its :meth:`evaluate` completes the epoch that :meth:`train_epoch` began, as ``train_ch3`` calls
    them. What it gives ``train_ch3``, for the progress line and the plot, is the mean over the members
    still training (NaN once none is, which stops ``train_ch3``); a checkpoint saves all of the above
    (:meth:`state_dict`).
    """

    def __init__(self, net, loss, optimizer, device, precision="fp32", graphs=None, schedulers=None,
                 **hooks):
        super().__init__(net, loss, optimizer, device, precision, graphs, **hooks)
        self.schedulers = schedulers
        self.histories, self.best = [[] for _ in range(net.size)], [{} for _ in range(net.size)]
        self.diverged = [None] * net.size

    def make_counters(self):  # one of each per member
        super().make_counters()
        for name in ("loss_sum", "correct", "first_bad"):
            setattr(self, name, getattr(self, name).repeat(self.net.size))

    def train_members(self, loader):
        """One epoch: ``(mean loss, accuracy, first bad batch or -1)`` per member."""
        self.train_pass(loader)
        n = len(loader) * loader.batch_size if loader.drop_last else loader.size
        return (self.loss_sum / n).tolist(), (self.correct / n).tolist(), self.first_bad.tolist()

    def forward(self, loader, idx, net, train):
        X, y = self.inputs(loader, idx, train)  # augment: one draw per image, whatever its member
        with precision_context(self.precision, self.device):
            y_hat = net(X)
            l_sum = self.loss(y_hat.flatten(0, 1), y.flatten()).view(y.shape).float().sum(-1)
        return y_hat, y, l_sum

    # -- the epoch functions that train_ch3 calls
    def train_epoch(self, net, loader, loss, updater, device):
        self.started = time.perf_counter()
        self.trained = self.train_members(loader)
        self.note_divergence([b >= 0 for b in self.trained[2]])
        return self.live_mean(self.trained[0]), self.live_mean(self.trained[1])

    def evaluate(self, net, loader, loss, device):
        self.eval_pass(loader)
        losses, accs = (self.loss_sum / loader.size).tolist(), (self.correct / loader.size).tolist()
        self.note_divergence([not math.isfinite(v) for v in losses])
        if self.schedulers is not None:
            self.schedulers.step(losses)
        self.record_epoch(losses, accs, validating=loader.split == "validation")
        return self.live_mean(losses), self.live_mean(accs)

    def note_divergence(self, bad):
        """Mark the members that ``bad`` says diverged in this epoch: the epoch, and the first bad
        batch of its training (-1 where only the evaluation showed it)."""
        for k, is_bad in enumerate(bad):
            if is_bad and self.diverged[k] is None:
                self.diverged[k] = (len(self.histories[k]) + 1, self.trained[2][k])

    def live_mean(self, values):
        live = [v for v, d in zip(values, self.diverged) if d is None]
        return sum(live) / len(live) if live else math.nan

    def record_epoch(self, losses, accs, validating):
        """Each member's record of the epoch, as its single run would make it."""
        train_losses, train_accs, _ = self.trained
        lrs, seconds = self.optimizer.param_groups[0]["lr"].tolist(), time.perf_counter() - self.started
        for k, history in enumerate(self.histories):
            record = epoch_record(len(history) + 1, train_losses[k], train_accs[k], losses[k], accs[k],
                                  lrs[k], seconds)
            if validating:
                record = as_validation(record)
                keep_if_best(self.best[k], record, lambda: self.eval_net.member_state(k))
            history.append(record)

    def state_dict(self):
        """What a stack's checkpoint holds beside its model, optimizer and loaders."""
        return dict(eval_net=self.eval_net.state_dict() if self.eval_net is not self.net else None,
                    hooks=[t.clone() for t in self.hook_state()], histories=self.histories,
                    schedulers=self.schedulers.state_dict() if self.schedulers else None,
                    diverged=self.diverged, best=self.best)

    def load_state_dict(self, state):
        if state["eval_net"] is not None:
            self.eval_net.load_state_dict(state["eval_net"])
        for tensor, saved in zip(self.hook_state(), state["hooks"]):
            tensor.copy_(saved)
        if self.schedulers is not None:
            self.schedulers.load_state_dict(state["schedulers"])
        self.histories, self.diverged, self.best = state["histories"], state["diverged"], state["best"]


def stack_id(keys):
    return hashlib.sha1(json.dumps(sorted(keys)).encode()).hexdigest()[:16]


# Options of torch's optimizers that StackedOptimizer leaves out, at the values that mean "off".
PLAIN = dict(amsgrad=False, maximize=False, momentum=0, dampening=0, nesterov=False)


def stacked_optimizer(model, optimizers, device):
    """The :class:`StackedOptimizer` of ``model`` that does what each member's ``optimizers`` do;
    refused unless they are one of the plain Adam, AdamW or SGD, all of one type."""
    kind = StackedOptimizer.KINDS.get(type(optimizers[0]))
    if kind is None or {type(o) for o in optimizers} != {type(optimizers[0])}:
        raise ValueError(f"a stack's members share one optimizer type among "
                         f"{sorted(StackedOptimizer.KINDS.values())}; got "
                         f"{sorted({type(o).__name__ for o in optimizers})}")
    groups = [o.param_groups[0] for o in optimizers]
    other = {f"{k}={g[k]!r}" for g in groups for k, default in PLAIN.items()
             if g.get(k, default) != default}
    if other:
        raise ValueError(f"a stack's optimizers take their defaults for {sorted(PLAIN)}; got "
                         f"{', '.join(sorted(other))}")
    return StackedOptimizer(model.parameters(), kind, [float(g["lr"]) for g in groups],
                            [g["weight_decay"] for g in groups], groups[0].get("betas", (0.9, 0.999)),
                            groups[0].get("eps", 1e-8), device)


def train_stack(members, epochs, device, precision="fp32", graphs=None, checkpoint=None, log=print):
    """Train ``members`` as one stack, by ``train_ch3``, for ``epochs`` epochs; returns its
    :class:`StackTrainer`, whose ``histories``, ``diverged`` and ``best`` are each member's, and
    whose ``net`` and ``eval_net`` are the trained stack.

    Each member is a dict, built as the member's single run builds it: ``net`` (initialised),
    ``optimizer`` (its type, lr and weight decay are read), ``scheduler`` (a maker of the member's
    scheduler from an optimizer, or None), ``loss`` (per example), ``train`` and ``eval`` (its
    DeviceLoaders; ``eval`` is the validation split under the honest protocol, and its ``split``
    says so) and ``key`` (what the run computes). Runs of the recipe (``recipe``, and ``background``:
    a black pixel, normalised with the run's own statistics) train with its augment, schedule and EMA
    (:func:`~nbutils.tools.recipe.recipe_hooks`); the EMA's copy is what evaluation runs, as in a
    single recipe run.

    ``checkpoint``: a path; the stack's whole state is written there after every epoch, and a
    stack killed outright resumes from it to the results an uninterrupted one gives. One made by
    other runs is not resumed, and the log says so. Once every member has diverged, training stops
    there, and the trainer says where each did.
    """
    model = StackedModel([m["net"] for m in members]).to(device)
    optimizer = stacked_optimizer(model, [m["optimizer"] for m in members], device)
    train_iter = StackLoader([m["train"] for m in members])
    recipe = members[0].get("recipe")
    made = recipe_hooks(recipe, model, optimizer, len(train_iter), torch.tensor(
        [m["background"] for m in members], device=device)) if recipe else {}
    trainer = StackTrainer(model, members[0]["loss"], optimizer, device, precision, graphs,
                           schedulers=MemberSchedulers(optimizer, [m["scheduler"] for m in members]),
                           eval_net=getattr(made.get("after_update"), "ema_net", model), **made)
    saved = Checkpoint(checkpoint, {"members": [m["key"] for m in members]}, log=log) \
        if checkpoint else None
    if saved and saved.mismatch():
        log(f"not resuming {checkpoint}: it was made by other runs, or before stacks recorded theirs; "
            f"starting at epoch 1")
        saved.resume = False
    try:
        train_ch3(model, train_iter, StackLoader([m["eval"] for m in members]), members[0]["loss"],
                  epochs, optimizer, device=device, trainer=trainer, checkpoint=saved)
    except TrainingDiverged:
        if None in trainer.diverged:  # train_ch3 stops a stack only once every member has diverged
            raise
    return trainer
