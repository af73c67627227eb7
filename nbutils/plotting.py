"""Plotting helpers of my_utils, fixed for current IPython and for running without a notebook frontend."""
from __future__ import annotations

import io
import os
import sys
import time

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # plain python / CI: never try to open a window
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402

__all__ = ["Animator", "has_frontend", "plot", "plot_confusion", "plot_init_comparison",
           "plot_patches", "save_figure", "set_axes", "set_figsize", "show_images", "use_svg_display"]


def has_frontend() -> bool:
    """True inside a live notebook (Jupyter, JupyterLab, Colab, VS Code).

    False in plain python and in the kernels that papermill and nbval start for us: the bundle's
    runner and test suite set ``NBUTILS_HEADLESS=1``, since a kernel cannot tell who is watching.
    """
    if os.environ.get("NBUTILS_HEADLESS"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and ("google.colab" in sys.modules
                                  or type(shell).__name__ == "ZMQInteractiveShell")


def use_svg_display():
    """Vector figures inline. my_utils called IPython's removed ``set_matplotlib_formats``."""
    if has_frontend():
        from matplotlib_inline.backend_inline import set_matplotlib_formats
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
    if legend is None:
        legend = []
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
    """A grid of images (my_utils' signature); returns the axes."""
    figsize = (num_cols * scale, num_rows * scale)
    _, axes = plt.subplots(num_rows, num_cols, figsize=figsize, squeeze=False)
    axes = axes.flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        img = img.detach().cpu().numpy() if hasattr(img, "detach") else img
        ax.imshow(img.squeeze(), cmap="gray")
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    for ax in axes[len(imgs):]:
        ax.set_visible(False)
    return axes


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig, path):
    """Write ``fig`` as PNG atomically (a reader never sees half a file)."""
    return atomic_write_bytes(path, figure_png(fig))


class Animator:
    """Plot data points as they arrive (my_utils' constructor and ``add``).

    In a notebook one PNG display is updated in place (no ``clear_output``, so no flicker in VS Code and
    no pile of frames in nbval's output), at most every ``min_interval`` seconds. With no frontend it
    draws nothing on screen; :meth:`save` writes the final figure. ``add(x, y, axis=1)`` feeds a second
    panel when ``ncols``/``nrows`` ask for one; :meth:`config` labels it.
    """

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None, xscale="linear",
                 yscale="linear", fmts=("-", "m--", "g-.", "r:"), nrows=1, ncols=1,
                 figsize=(3.5, 2.5), live=None, min_interval=0.5):
        # A bare Figure, not pyplot's: the inline backend must not print it again at the cell's end.
        self.fig = Figure(figsize=figsize)
        self.axes = list(self.fig.subplots(nrows, ncols, squeeze=False).flatten())
        self.fmts = fmts
        self.settings = [None] * len(self.axes)
        self.data = [([], []) for _ in self.axes]
        self.config(0, xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
        self.live = has_frontend() if live is None else live
        self.min_interval, self._last_draw, self._handle = min_interval, 0.0, None

    def config(self, axis=0, xlabel=None, ylabel=None, xlim=None, ylim=None, xscale="linear",
               yscale="linear", legend=None):
        self.settings[axis] = (xlabel, ylabel, xlim, ylim, xscale, yscale, legend)

    def add(self, x, y, axis=0):
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        X, Y = self.data[axis]
        if not X:
            X.extend([] for _ in range(n))
            Y.extend([] for _ in range(n))
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                X[i].append(a)
                Y[i].append(b)
        if self.live and time.monotonic() - self._last_draw >= self.min_interval:
            self.show()

    def draw(self):
        for ax, (X, Y), settings in zip(self.axes, self.data, self.settings):
            ax.cla()
            for x, y, fmt in zip(X, Y, self.fmts):
                ax.plot(x, y, fmt)
            if settings:
                set_axes(ax, *settings)
        self.fig.tight_layout()

    def show(self):
        """Redraw the one live display (created on first use)."""
        from IPython.display import Image, display
        self.draw()
        image = Image(data=figure_png(self.fig), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
        self._last_draw = time.monotonic()

    def finish(self, path=None):
        """Draw the final state (the throttle may have skipped it) and optionally save it as PNG."""
        if self.live:
            self.show()
        else:
            self.draw()
        if path is not None:
            save_figure(self.fig, path)
        return self.fig

    def save(self, path):
        self.draw()
        return save_figure(self.fig, path)


def plot_patches(image, patch_size=4):
    """One image cut into patches: the patch grid (gaps between patches) and the (N, p²) matrix."""
    from .data import patchify
    image = image.detach().cpu().reshape(28, 28)
    patches = patchify(image[None], patch_size)[0]
    k = 28 // patch_size
    fig = plt.figure(figsize=(9, 4))
    grid = fig.add_gridspec(k, 2 * k + 3)
    for i in range(k * k):
        ax = fig.add_subplot(grid[i // k, i % k])
        ax.imshow(patches[i].reshape(patch_size, patch_size), cmap="gray",
                  vmin=float(image.min()), vmax=float(image.max()))
        ax.set_axis_off()
    ax = fig.add_subplot(grid[:, k + 2:])
    ax.imshow(patches, cmap="gray", aspect="auto")
    ax.set_title(f"patch matrix {tuple(patches.shape)}")
    ax.set_xlabel("pixel within patch")
    ax.set_ylabel("patch (token)")
    fig.suptitle(f"{k}×{k} patches of {patch_size}×{patch_size} pixels")
    return fig


def plot_confusion(cm, class_names):
    """A confusion matrix with its counts written in."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(cm, cmap="Blues")
    n = len(class_names)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    return fig


def plot_init_comparison(stats):
    """Weight histograms (one layer) and activation spread per layer, for each initialisation."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, s in stats.items():
        left.hist(s["weights"].flatten().numpy(), bins=80, histtype="step", label=name, density=True)
        right.plot(list(s["activation_std"].values()), marker="o", label=name)
    left.set_title(f"weights of {next(iter(stats.values()))['layer']}")
    left.legend(fontsize=7)
    layers = list(next(iter(stats.values()))["activation_std"])
    right.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    right.set_yscale("log")
    right.set_title("activation std per layer (one batch, eval mode)")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig
