"""nbutils: the course's my_utils (d2l, 2020) ported with GPU support, plus the coursework's model.

The my_utils names work as before: ``from nbutils import load_data_fashion_mnist, train_ch3, Animator``.
One module per concern: data, model (cpu: its CPU kernels), train, fast, evaluation, plotting,
params, checkpoint, experiment (a run from parameters), run (papermill), results, bench, sweep (the
ablations' runs), ablations (their tables and verdicts), recipe (the stronger model), io.

Names are imported lazily, so ``python -m nbutils`` can set up a bare machine (install the
requirements, fetch the data) before torch is importable.
"""
import importlib

__version__ = "0.1.0"
# Where the notebooks' Colab badges and install cells point (one place; a test checks they agree).
GITHUB_REPOSITORY = "fashion-mnist-coursework/patch-mlp-notebooks"

_EXPORTS = {
    "data": ["CLASS_NAMES", "FASHION_MNIST", "DatasetError", "DatasetSpec", "DeviceLoader",
             "get_dataloader_workers", "get_fashion_mnist_labels", "load_data_fashion_mnist",
             "load_data_fashion_mnist_device", "load_split", "patchify", "pixel_stats",
             "prepare_fashion_mnist", "subset_indices", "unpatchify", "verify_fashion_mnist"],
    "model": ["INITS", "NeuralNetwork", "compare_inits", "count_parameters", "format_shape_table",
              "init_weights", "parameter_table", "trace_shapes"],
    "plotting": ["Animator", "has_frontend", "plot", "plot_confusion", "plot_init_comparison",
                 "plot_patches", "save_figure", "set_axes", "set_figsize",
                 "show_images", "use_svg_display"],
    "train": ["OPTIMIZERS", "Accumulator", "History", "Timer", "TrainingDiverged", "accuracy",
              "evaluate", "evaluate_accuracy", "evaluate_loss", "fit", "make_cut_scheduler",
              "make_optimizer", "make_scheduler", "resolve_device", "seed_everything", "train_ch3",
              "train_epoch_ch3", "training_animator", "try_all_gpus", "try_gpu"],
    "evaluation": ["confusion_matrix", "misclassified", "per_class_accuracy", "predict", "predict_ch3",
                   "report_lines"],
    "fast": ["FastTrainer", "make_fast_optimizer", "train_fast"],
    "cpu": ["to_torch_modules", "tune_cpu_allocator"],
    "params": ["Params", "from_namespace", "resolve"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbutils' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
