"""A stronger all-MLP recipe, still conv-free: a patch MLP-Mixer trained the way such models are now.

The coursework's model stays as it is (:mod:`nbutils.coursework`). This is the "what would a patch MLP do
today" comparison, with the same 4×4 patches and no convolution anywhere:

* model: residual token- and channel-mixing blocks with pre-LayerNorm and GELU, and MLPs wider than the
  coursework's (:class:`PatchMixer`, defined in notebook 07 and saved into :mod:`nbutils.tools.mixer`
  by its ``#@save`` cells; :class:`Recipe` holds its sizes and switches);
* loss: cross-entropy with label smoothing;
* optimizer: AdamW with a linear warm-up and a cosine decay, stepped every batch (:class:`WarmupCosine`);
* data: a random translation of up to 2 pixels and a horizontal flip, on the device (:class:`Augment`);
* weights: an exponential moving average, which is what gets evaluated (:class:`EMA`);
* protocol: the honest one (a stratified validation split chooses the epoch; the test set is seen once).

Every part runs inside the fast path's captured step (:class:`RecipeTrainer`). :data:`INGREDIENTS`
removes one ingredient at a time, for the table of which one bought what
(``python3 -m nbutils sweep --claims recipe``).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..coursework import make_scheduler
from ..devices import resolve_device
from ..fast import FastTrainer
from .mixer import MixerBlock, PatchMixer  # notebook 07's #@save cells

__all__ = ["EMA", "INGREDIENTS", "Augment", "MixerBlock", "PatchMixer", "Recipe", "RecipeTrainer",
           "WarmupCosine", "default_precision", "make_recipe", "recipe_for", "recipe_hooks"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    dim: int = 256
    depth: int = 6
    token_hidden: int = 256
    channel_hidden: int = 1024
    residual: bool = True
    norm: str = "layernorm"        # layernorm | batchnorm (over tokens, as the coursework's)
    activation: str = "gelu"       # gelu | relu
    label_smoothing: float = 0.1
    optimizer: str = "adamw"       # adamw (warm-up + cosine, per step) | adam (the coursework's)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    epochs: int = 40
    batch_size: int = 256
    augment: bool = True           # random translation (up to 2 px) and horizontal flip
    ema_decay: float = 0.999       # 0: no EMA, the raw weights are evaluated
    precision: str = "bf16"        # autocast, as the sweep's recipe rows train; "fp32" also works

    def __post_init__(self):
        for name, allowed in (("norm", ("layernorm", "batchnorm")), ("activation", ("gelu", "relu")),
                              ("optimizer", ("adamw", "adam"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe {name} must be one of {list(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"recipe ema_decay must be in [0, 1), got {self.ema_decay}")
        if min(self.dim, self.depth, self.token_hidden, self.channel_hidden, self.epochs,
               self.batch_size) < 1 or self.warmup_epochs < 0:
            raise ValueError("recipe sizes, epochs and batch_size must be >= 1 and warmup_epochs >= 0")


# The ablation of the recipe: each row takes one ingredient out of the full recipe.
INGREDIENTS = {
    "full recipe": {},
    "no residual": {"residual": False},
    "BatchNorm for LayerNorm": {"norm": "batchnorm"},
    "ReLU for GELU": {"activation": "relu"},
    "narrow MLPs": {"token_hidden": 64, "channel_hidden": 256},
    "no label smoothing": {"label_smoothing": 0.0},
    "Adam 1e-3, no schedule": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4},
    "no augmentation": {"augment": False},
    "no EMA": {"ema_decay": 0.0},
}


# ----------------------------------------------------------------------------- the step's hooks
class Augment:
    """A random shift of up to ``pad`` pixels each way and a horizontal flip with probability 1/2,
    per image, as one gather on the device (no host work, so it is captured with the step).

    ``background``: what a black pixel is after normalisation, a float; for a stack's batch
    (K, B, 1, 28, 28), a tensor of K, one per member (each normalises with its own training images'
    statistics).
    """

    def __init__(self, pad=2, flip=True, background=0.0):
        self.pad, self.flip, self.background = pad, flip, background

    def __call__(self, X):  # (B, 1, 28, 28) or a stack's (K, B, 1, 28, 28), already normalised
        if X.dim() == 4:
            return self.shift(X, torch.full(X.shape[:1], self.background, device=X.device))
        K, B = X.shape[:2]  # a view, not repeat_interleave: nothing for a CUDA graph to sync on
        return self.shift(X.flatten(0, 1), self.background[:, None].expand(K, B).flatten()).view(X.shape)

    def shift(self, X, background):
        """``X`` shifted and flipped, each image's frame filled with its own ``background`` (B,)."""
        B, _, H, W = X.shape
        p = self.pad
        frame = F.pad(torch.zeros(H, W, dtype=torch.bool, device=X.device), (p, p, p, p), value=True)
        padded = torch.where(frame, background.view(B, 1, 1, 1).to(X.dtype), F.pad(X, (p, p, p, p)))
        shift = torch.randint(0, 2 * p + 1, (B, 2), device=X.device)
        rows = (torch.arange(H, device=X.device) + shift[:, :1])[:, :, None]   # (B, H, 1)
        cols = torch.arange(W, device=X.device) + shift[:, 1:]                 # (B, W)
        if self.flip:
            flipped = torch.rand(B, 1, device=X.device) < 0.5
            cols = torch.where(flipped, cols.flip(1), cols)
        batch = torch.arange(B, device=X.device)[:, None, None]
        return padded[batch, 0, rows, cols[:, None, :]].unsqueeze(1)


class WarmupCosine:
    """The learning rate of every step, computed on the device from a step counter: a linear warm-up
    to ``lr``, then a cosine to zero. It writes into the optimizer's tensor lr, so it runs in a graph."""

    def __init__(self, optimizer, lr, warmup_steps, total_steps):
        self.lrs = [g["lr"] for g in optimizer.param_groups]
        if not all(torch.is_tensor(t) for t in self.lrs):
            raise ValueError("WarmupCosine needs an optimizer whose lr is a tensor (make_recipe)")
        self.base, self.warmup, self.total = lr, max(warmup_steps, 1), max(total_steps, 1)
        self.step = torch.zeros((), device=self.lrs[0].device)

    def __call__(self):
        self.step += 1
        warm = torch.clamp(self.step / self.warmup, max=1.0)
        progress = torch.clamp((self.step - self.warmup) / max(self.total - self.warmup, 1), 0, 1)
        lr = self.base * warm * 0.5 * (1 + torch.cos(math.pi * progress))
        for t in self.lrs:
            t.copy_(lr)

    def state_tensors(self):
        return [self.step]


class EMA:
    """``ema_net``: a copy of ``net`` whose weights follow ``net``'s as an exponential moving average
    (buffers such as BatchNorm statistics are copied)."""

    def __init__(self, net, decay):
        self.ema_net, self.decay = copy.deepcopy(net).requires_grad_(False), decay
        self._params = list(self.ema_net.parameters()), list(net.parameters())
        self._buffers = list(self.ema_net.buffers()), list(net.buffers())

    @torch.no_grad()
    def __call__(self):
        torch._foreach_lerp_(*self._params, 1 - self.decay)
        if self._buffers[0]:
            torch._foreach_copy_(*self._buffers)


class RecipeTrainer(FastTrainer):
    """The fast path's step with the recipe's hooks, captured with it: ``augment(X)`` on each
    training batch, ``before_update()`` between backward and the optimizer (a per-step learning-rate
    schedule), ``after_update()`` after it (an EMA of the weights); ``eval_net`` (default ``net``) is
    what evaluation runs. A hook with mutable device state lists it in ``state_tensors()``, so that
    the warm-up before a CUDA graph's capture leaves no trace."""

    def __init__(self, net, loss, optimizer, device, precision="fp32", graphs=None, augment=None,
                 before_update=None, after_update=None, eval_net=None):
        self.augment, self.before_update, self.after_update = augment, before_update, after_update
        self.eval_net = net if eval_net is None else eval_net
        super().__init__(net, loss, optimizer, device, precision, graphs)

    def inputs(self, loader, idx, train):
        X, y = loader.batch(idx)
        return (self.augment(X) if train and self.augment is not None else X), y

    def update(self):
        for step in (self.before_update, self.optimizer.step, self.after_update):
            if step is not None:  # a hook the recipe leaves out
                step()

    @property
    def evaluated(self):
        return self.eval_net

    def mutable_tensors(self):
        tensors = super().mutable_tensors()
        if self.eval_net is not self.net:
            tensors += self.eval_net.state_dict().values()
        return tensors + self.hook_state()

    def hook_state(self):
        """The hooks' device state, as their ``state_tensors()`` list it (the schedule's step count)."""
        return [t for hook in (self.augment, self.before_update, self.after_update) if hook is not None
                for t in getattr(hook, "state_tensors", list)()]


# ----------------------------------------------------------------------------- putting it together
def default_precision(device="auto"):
    """The recipe's bf16 autocast on a GPU with bf16 units (compute capability 8.0 on: A100, H100,
    L4...); fp32 elsewhere, where bf16 is emulated: about 20 times slower on this bundle's CPU (see
    reports/bench/README.md), and slow on Colab's default T4."""
    device = resolve_device(device)
    native = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
    return "bf16" if native else "fp32"


def make_recipe(recipe: Recipe, device, steps_per_epoch, background=0.0):
    """``(net, eval_net, loss, optimizer, scheduler, hooks)`` for :class:`RecipeTrainer`.

    ``hooks``: :func:`recipe_hooks`; ``scheduler`` is the coursework's ReduceLROnPlateau for the
    "adam" ingredient and None otherwise (the per-step schedule is a hook).
    """
    net = PatchMixer(recipe).to(device)
    cuda, adamw = torch.device(device).type == "cuda", recipe.optimizer == "adamw"
    # A tensor lr: AdamW's per-step schedule writes into it, and a captured step on a GPU reads it.
    lr = torch.tensor(recipe.lr, device=device) if adamw or cuda else recipe.lr
    fused = dict(capturable=True, fused=True) if cuda else {}
    optimizer = (torch.optim.AdamW if adamw else torch.optim.Adam)(
        net.parameters(), lr=lr, weight_decay=recipe.weight_decay, **fused)
    # the coursework's Adam keeps its plateau scheduler (its ingredient sets lr 1e-3, decay 5e-4)
    scheduler = None if adamw else make_scheduler(optimizer)
    hooks = recipe_hooks(recipe, net, optimizer, steps_per_epoch, background)
    eval_net = hooks["after_update"].ema_net if hooks["after_update"] else net
    loss = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    return net, eval_net, loss, optimizer, scheduler, hooks


def recipe_hooks(recipe: Recipe, net, optimizer, steps_per_epoch, background=0.0):
    """The recipe's step hooks for :class:`RecipeTrainer`, None where it leaves one out: ``augment``,
    ``before_update`` (AdamW's warm-up and cosine) and ``after_update`` (the EMA of ``net``).
    ``background``: a black pixel, normalised (for a stack, a tensor of one per run)."""
    steps = recipe.epochs * steps_per_epoch
    return dict(augment=Augment(2, True, background) if recipe.augment else None,
                before_update=WarmupCosine(optimizer, recipe.lr, recipe.warmup_epochs * steps_per_epoch,
                                           steps) if recipe.optimizer == "adamw" else None,
                after_update=EMA(net, recipe.ema_decay) if recipe.ema_decay else None)


def recipe_for(run, ingredient, name="recipe"):
    """The :class:`Recipe` of one row of the recipe's ablation. A training subset (the smoke profile)
    trains for the profile's epochs instead, without warm-up. An unknown row is refused with
    ``name``, the caller's word for it."""
    if ingredient not in INGREDIENTS:
        raise ValueError(f"{name} must be one of {list(INGREDIENTS)}, got {ingredient!r}")
    short = dict(epochs=run.epochs, warmup_epochs=0) if run.train_subset else {}
    return Recipe(**INGREDIENTS[ingredient], precision=run.precision, **short)
