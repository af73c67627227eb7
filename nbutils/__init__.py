"""nbutils: the course's my_utils (d2l, 2020) ported with GPU support, and the coursework's own code.

The core, which notebooks 01-05 use: ``coursework`` (generated from the notebooks' ``#@save`` cells by
``python3 -m nbutils export``), the my_utils port (``data``, ``plotting``, ``train``, ``devices``,
``metrics``) and what the notebooks' training call takes beyond my_utils (``fast``, ``cpu``,
``checkpoint``), with ``params``, ``runs`` (run folders), ``shapes`` and ``io``. The commands and
experiments (the papermill runner, results, bench, sweep, ablations, recipe, export) live apart in
:mod:`nbutils.tools`, which depends on the core and never the reverse.

The my_utils names work as before: ``from nbutils import load_data_fashion_mnist, train_ch3, Animator``.
They are imported on first use, so that ``python3 -m nbutils`` can set up a bare machine (install the
requirements, fetch the data) before torch is importable.
"""
import importlib

__version__ = "0.2.0"
# Where the notebooks' Colab badges and install cells point (one place; a test checks they agree).
GITHUB_REPOSITORY = "fashion-mnist-coursework/patch-mlp-notebooks"

EXPORTS = {
    "coursework": ["INITS", "NeuralNetwork", "OPTIMIZERS", "build", "init_weights", "make_optimizer",
                   "make_scheduler", "patchify"],
    "data": ["CLASS_NAMES", "FASHION_MNIST", "DatasetError", "DatasetSpec", "DeviceLoader",
             "get_dataloader_workers", "get_fashion_mnist_labels", "load_data_fashion_mnist",
             "load_data_fashion_mnist_device", "load_split", "load_subsets", "pixel_stats",
             "prepare_fashion_mnist", "subset_indices", "verify_fashion_mnist"],
    "devices": ["resolve_device", "try_all_gpus", "try_gpu", "use_fast_path"],
    "metrics": ["TrainingDiverged", "accuracy"],
    "plotting": ["Animator", "browse", "has_frontend", "plot", "save_figure", "set_axes",
                 "set_figsize", "show_images", "training_animator", "use_svg_display"],
    "train": ["Accumulator", "History", "Timer", "evaluate", "evaluate_accuracy", "evaluate_loss",
              "predict_ch3", "train_ch3", "train_epoch_ch3"],
    "fast": ["FastTrainer"],
    "checkpoint": ["Checkpoint", "CheckpointMismatch"],
    "params": ["Params", "describe", "from_namespace", "resolve"],
    "runs": ["environment", "hardware", "load_or_train", "load_trained", "make_loaders",
             "reports_root", "run_folder", "save_run", "train_params", "warn_if_slow",
             "write_metrics"],
    "shapes": ["count_parameters", "format_shape_table", "trace_shapes"],
}
WHERE = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(WHERE)


def __getattr__(name):  # PEP 562: a name is imported from its module on first use
    if name in WHERE:
        value = getattr(importlib.import_module(f".{WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbutils' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
