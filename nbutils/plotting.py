"""my_utils' plotting helpers, fixed for current IPython and for running without a notebook frontend;
the live Animator of the training loop, and widgets that fall back to one static view."""
from __future__ import annotations

import functools
import inspect
import io
import os
import sys
import time

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # plain python / CI: never try to open a window
import ipywidgets  # noqa: E402
from IPython import get_ipython  # noqa: E402
from IPython.display import Image, display  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib_inline.backend_inline import set_matplotlib_formats  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402

__all__ = ["Animator", "browse", "has_frontend", "plot", "save_figure", "set_axes", "set_figsize",
           "show_images", "training_animator", "use_svg_display"]


def has_frontend() -> bool:
    """True inside a live notebook (Jupyter, JupyterLab, Colab, VS Code), where a person watches.

    False in plain python, and under papermill, nbconvert and nbval: their clients run each cell with
    ``allow_stdin=False`` (they cannot answer ``input()``), which a person's frontend never does.
    ``NBUTILS_HEADLESS=1`` makes it False anywhere.
    """
    if os.environ.get("NBUTILS_HEADLESS"):
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return "google.colab" in sys.modules and shell is not None
    return bool(shell.kernel.get_parent().get("content", {}).get("allow_stdin", False))


def use_svg_display():
    """Vector figures inline. my_utils called IPython's removed ``set_matplotlib_formats``."""
    if has_frontend():
        set_matplotlib_formats("svg")


def set_figsize(figsize=(3.5, 2.5)):
    plt.rcParams["figure.figsize"] = figsize


def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend):
    """Label, scale and limit one matplotlib axes (my_utils' signature)."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xscale(xscale)
    axes.set_yscale(yscale)
    axes.set_xlim(xlim)
    axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
         yscale="linear", fmts=("-", "m--", "g-.", "r:"), figsize=(3.5, 2.5), axes=None):
    """Plot one or several series against X (my_utils' signature); returns the axes."""
    legend = legend or []
    set_figsize(figsize)
    axes = axes if axes is not None else plt.gca()

    def has_one_axis(X):
        return (hasattr(X, "ndim") and X.ndim == 1
                or isinstance(X, list) and not hasattr(X[0], "__len__"))

    if has_one_axis(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif has_one_axis(Y):
        Y = [Y]
    if len(X) != len(Y):
        X = X * len(Y)
    axes.cla()
    for x, y, fmt in zip(X, Y, fmts):
        axes.plot(x, y, fmt) if len(x) else axes.plot(y, fmt)
    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
    return axes


def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5):
    """A grid of images (my_utils' signature); returns the axes. Rows grow with their titles' lines,
    so that a two-line title never covers the image above it."""
    lines = max((str(t).count("\n") + 1 for t in titles or []), default=0)
    figsize = (num_cols * scale, num_rows * (scale + 0.22 * lines))
    _, axes = plt.subplots(num_rows, num_cols, figsize=figsize, squeeze=False, layout="constrained")
    axes = axes.flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        img = img.detach().cpu().numpy() if hasattr(img, "detach") else img
        ax.imshow(img.squeeze(), cmap="gray")
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=9)
    for ax in axes[len(imgs):]:
        ax.set_visible(False)
    return axes


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig, path):
    """Write ``fig`` as PNG atomically (a reader never sees half a file)."""
    atomic_write_bytes(path, figure_png(fig))


class Animator:
    """Plot data points as they arrive (my_utils' constructor and ``add``), readable from the first.

    In a notebook frontend one PNG display is updated in place (no ``clear_output``: no flicker in VS
    Code, no pile of frames in nbval's output), at most every ``min_interval`` seconds; without one
    it draws nothing on screen, and :meth:`save` writes the figure. Every point has a marker, so a
    single epoch shows; ``ylim`` is where the y axis starts, and it grows to hold every point; the x
    ticks are integers. ``panels`` puts series side by side: ``(0, 0, 0, 1)`` draws the fourth series
    of each ``add`` in a second panel (label it with :meth:`config`), in step with the others.
    """

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
                 yscale="linear", fmts=("-", "m--", "g-.", "r:"), nrows=1, ncols=1,
                 figsize=(3.5, 2.5), panels=None, live=None, min_interval=0.5):
        # A bare Figure, not pyplot's: the inline backend must not show it again at the cell's end.
        self.fig = Figure(figsize=figsize)
        self.axes = list(self.fig.subplots(nrows, ncols, squeeze=False).flatten())
        self.fmts, self.panels = fmts, panels
        self.settings = [None] * len(self.axes)
        self.config(0, xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
        self.X, self.Y = None, None
        self.live = has_frontend() if live is None else live
        self.min_interval, self._last_draw, self._handle = min_interval, 0.0, None

    def config(self, axis=0, xlabel=None, ylabel=None, xlim=None, ylim=None, xscale="linear",
               yscale="linear", legend=None):
        self.settings[axis] = (xlabel, ylabel, xlim, ylim, xscale, yscale, legend)

    def add(self, x, y):
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if self.X is None:
            self.X, self.Y = [[] for _ in range(n)], [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        if self.live and time.monotonic() - self._last_draw >= self.min_interval:
            self.show()

    def draw(self):
        panels = self.panels or [0] * len(self.X or [])
        for axis, (ax, settings) in enumerate(zip(self.axes, self.settings)):
            ax.cla()
            series = [(x, y, fmt) for x, y, fmt, p in zip(self.X or [], self.Y or [], self.fmts, panels)
                      if p == axis]
            for x, y, fmt in series:
                ax.plot(x, y, fmt, marker="o", markersize=3)
            if settings:
                set_axes(ax, *settings)
                _fit_ylim(ax, settings[3], [v for _, y, _ in series for v in y])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        self.fig.tight_layout()

    def show(self):
        """Redraw the one live display (created on first use)."""
        self.draw()
        image = Image(data=figure_png(self.fig), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
        self._last_draw = time.monotonic()

    def finish(self):
        """Draw the final state, which the throttle may have skipped."""
        self.show() if self.live else self.draw()
        return self.fig

    def save(self, path):
        self.draw()
        save_figure(self.fig, path)


def _fit_ylim(ax, ylim, values):
    """Widen a linear axis's fixed limits so that no point falls outside them."""
    if ylim is None or not values or ax.get_yscale() != "linear":
        return
    low, high = min(ylim[0], min(values)), max(ylim[1], max(values))
    pad = 0.04 * (high - low)
    ax.set_ylim(low - pad * (low < ylim[0]), high + pad * (high > ylim[1]))


def training_animator(num_epochs, live=None, eval_label="test acc", lr_scale="log"):
    """The live plot of ``train_ch3``: my_utils' three curves, and the learning rate beside them.

    ``eval_label`` "val acc" for the honest protocol, whose per-epoch evaluation is the validation
    split; ``lr_scale`` "linear" for a schedule that decays to zero (a log axis cannot show 0).
    """
    xlim = [0.5, num_epochs + 0.5]
    animator = Animator(xlabel="epoch", ylabel="loss / accuracy", xlim=xlim, ylim=[0, 1],
                        legend=["train loss", "train acc", eval_label], ncols=2, figsize=(7.5, 2.8),
                        panels=(0, 0, 0, 1), live=live)
    animator.config(1, xlabel="epoch", ylabel="learning rate", xlim=xlim, yscale=lr_scale)
    return animator


def browse(draw, save=None, **controls):
    """Browse the figures ``draw(**values)`` makes, one per setting of ``controls``.

    In a notebook frontend this is ipywidgets' ``interact``: a ``(min, max)`` control is a slider, a
    list a dropdown, each starting from ``draw``'s default. Without one (papermill, nbval, a
    terminal), where a widget would show nothing, it draws one static view from those defaults. The
    first view is also saved to ``save`` as PNG.
    """
    pending = [save] if save else []

    @functools.wraps(draw)  # interact reads draw's signature, and its defaults, through this
    def view(**values):
        fig = draw(**values)
        if pending:
            save_figure(fig, pending.pop())
        display(Image(data=figure_png(fig), format="png"))
        plt.close(fig)  # shown once, as PNG: pyplot must not show it again

    if has_frontend():
        ipywidgets.interact(view, **controls)
    else:
        view(**{name: p.default for name, p in inspect.signature(draw).parameters.items()
                if name in controls})
