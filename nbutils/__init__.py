"""nbutils: the course's my_utils (d2l, 2020) ported with GPU support, and the coursework's own code.

The core, which notebooks 01-05 use: ``coursework`` (generated from the notebooks' ``#@save`` cells by
``python3 -m nbutils export``), the my_utils port (``data``, ``plotting``, ``train``, ``devices``,
``metrics``, ``d2l``) and what the notebooks' training call takes beyond my_utils (``fast``,
``checkpoint``), with ``saved`` (the ``#@save`` cells), ``runs`` (a run: what it computes, where it
runs, its folder), ``params`` (the profiles and the checks that make a run), ``trained`` (what
notebook 05 reads), ``estimate`` (the CPU's time, before training), ``shapes``, ``paths`` and
``io``. The commands and experiments (the papermill runner, results, bench, the CPU
kernels, sweep, ablations, recipe and its trainer, stacks, export) live apart in
:mod:`nbutils.tools`, which depends on the core and never the reverse.

The my_utils names work as before: ``from nbutils import load_data_fashion_mnist, train_ch3, Animator``,
and so does the book's code with ``import nbutils as d2l`` in place of ``from d2l import torch as d2l``
(:mod:`nbutils.d2l` holds the my_utils names that have no other home here, the torch aliases such as
``d2l.tensor`` and ``d2l.reshape`` among them). Names are imported on first use, so that
``python3 -m nbutils`` can set up a bare machine (install the requirements, fetch the data) before
torch is importable.
"""
import importlib

from . import saved

__version__ = "0.2.0"
# Where the notebooks' Colab badges and install cells point (one place; a test checks they agree).
GITHUB_REPOSITORY = "fashion-mnist-coursework/patch-mlp-notebooks"

EXPORTS = {
    "coursework": ["INITS", "NeuralNetwork", "OPTIMIZERS", "build", "init_weights", "make_optimizer",
                   "make_scheduler", "patchify", "train_run"],
    "data": ["CLASS_NAMES", "FASHION_MNIST", "N_TEST", "N_TRAIN", "DatasetError", "DatasetSpec",
             "DeviceLoader", "get_dataloader_workers", "get_fashion_mnist_labels",
             "load_data_fashion_mnist", "load_data_fashion_mnist_device", "load_split",
             "load_subsets", "pixel_stats", "prepare_fashion_mnist", "subset_indices",
             "verify_fashion_mnist"],
    "devices": ["resolve_device", "try_all_gpus", "try_gpu", "use_fast_path"],
    "metrics": ["TrainingDiverged", "accuracy"],
    "plotting": ["Animator", "browse", "has_frontend", "plot", "plt", "save_figure", "set_axes",
                 "set_figsize", "show_images", "training_animator", "use_svg_display"],
    "train": ["Accumulator", "History", "Timer", "evaluate", "evaluate_accuracy", "evaluate_loss",
              "predict_ch3", "train_ch3", "train_epoch_ch3"],
    "fast": ["FastTrainer", "tune_cpu_allocator"],
    "checkpoint": ["Checkpoint", "CheckpointMismatch", "model_identity"],
    "params": ["describe", "from_namespace", "resolve"],
    "runs": ["Env", "Run", "archive", "as_dict", "environment", "from_dict", "hardware", "headline",
             "make_loaders", "run_checkpoint", "run_folder", "run_identity", "save_run",
             "write_history"],
    "trained": ["load_or_train", "load_trained", "write_metrics"],
    "estimate": ["time_training_step", "warn_if_slow"],
    "paths": ["checkout", "data_root", "notebooks_dir", "reports_root"],
    "shapes": ["count_parameters", "format_shape_table", "trace_shapes"],
    "d2l": ["DATA_HUB", "DATA_URL", "Residual", "corr2d", "download", "download_all",
            "download_extract", "evaluate_accuracy_gpu", "linreg", "load_array", "mkdir_if_not_exist",
            "sgd", "squared_loss", "synthetic_data", "train_ch6"],
}
# d2l's torch aliases: ``nbutils.tensor`` works, but ``from nbutils import *`` leaves them out, so that
# it never shadows ``abs`` or a ``numpy`` module.
ALIASES = ["abs", "arange", "argmax", "astype", "concat", "cos", "cosh", "exp", "float32", "int32",
           "linspace", "log", "matmul", "meshgrid", "normal", "numpy", "ones", "reduce_sum", "reshape",
           "sin", "sinh", "size", "stack", "tanh", "tensor", "to", "transpose", "zeros"]
if saved.in_kernel():  # a notebook's `import nbutils`: the notebooks' #@save edits, as saved, reach it
    saved.sync()

WHERE = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(WHERE)
WHERE.update((name, "d2l") for name in ALIASES)


def __getattr__(name):  # PEP 562: a name is imported from its module on first use
    if name in WHERE:
        value = getattr(importlib.import_module(f".{WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbutils' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(WHERE))
