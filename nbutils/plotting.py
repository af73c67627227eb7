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

__all__ = ["Animator", "has_frontend", "plot", "save_figure", "set_axes", "set_figsize",
           "show_images", "use_svg_display"]


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
