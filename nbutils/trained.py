"""What notebook 05 reads: the model notebook 04 trained into a run folder (or, opened alone, one
trained now by 04's ``train_run``), and the run's ``metrics.json``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import CheckpointMismatch, mismatch, model_identity
from .coursework import NeuralNetwork, train_run
from .devices import resolve_device
from .io import atomic_write_json
from .params import describe, resolve
from .plotting import training_animator
from .runs import Env, Run, environment, from_dict, headline, run_folder, save_run
from .train import History

__all__ = ["load_or_train", "load_trained", "write_metrics"]


def load_trained(folder, device=None, model=NeuralNetwork):
    """``(net, history, run)`` of the model trained into ``folder``, or None if there is none.
    ``model``: the class it was trained as (notebook 02's, or an edited one pasted into a notebook);
    a model.pt of another class or code is refused."""
    folder = Path(folder)
    if not ((folder / "model.pt").exists() and (folder / "history.json").exists()):
        return None
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
    run, _ = from_dict(saved["params"])
    net = model(run.patch_size)
    why = mismatch(saved.get("identity", {}), model_identity(net))  # whatever loop trained it
    if why:
        raise CheckpointMismatch(f"{folder / 'model.pt'} was trained by other code ({why}); run "
                                 f"notebook 04 again to train the code as it is now (in Colab, "
                                 f"paste the class that 04 trained into this notebook too)")
    net.load_state_dict(saved["model"])
    history = History(json.loads((folder / "history.json").read_text()))
    return net.to(resolve_device(device)), history, run


def load_or_train(run: Run, env: Env, folder, model=NeuralNetwork, log=print):
    """Notebook 05's model: the one notebook 04 trained into ``folder``, with the parameters it was
    trained with. Without one it is trained now, so that the notebook opened alone still runs end to
    end: on a GPU the run itself (seconds on the fast path), on a CPU, where that takes hours, a smoke
    model in ``folder/smoke-fallback``. ``model``: the class notebook 04 trained (:func:`load_trained`).
    Returns ``(net, history, the trained run, the folder its results belong in)``."""
    trained = load_trained(folder, env.device, model)
    if trained is not None:
        log(f"The model notebook 04 trained in {folder}, with its own parameters (params.json).")
        return (*trained, Path(folder))
    if resolve_device(env.device).type == "cuda":
        log(f"No trained model in {folder}: training it now, as notebook 04 would (seconds on a GPU).")
    else:
        log(f"No trained model in {folder}. Run notebook 04 first (or `python3 -m nbutils "
            f"reproduce`). So that this notebook still runs end to end, a smoke model is trained now.")
        run, env = resolve("smoke", device=env.device, data_root=env.data_root,
                           run_dir=str(Path(folder) / "smoke-fallback"), live_plot=False)
        folder = run_folder(run, env)
    net, history = train_run(run, env, folder, training_animator(run.epochs, live=False))
    save_run(folder, net, history, run, env)
    return net, History(history), run, Path(folder)


def write_metrics(folder, history, extra=None):
    """``metrics.json``: the headline numbers, beside the parameters and the code of the model they
    measure (the run folder's own ``params.json`` and ``model.pt``, whatever the caller's profile)
    and the environment."""
    folder = Path(folder)
    params = json.loads((folder / "params.json").read_text())
    identity = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)["identity"]
    metrics = dict(
        headline(history), summary=describe(from_dict(params)[0]), params=params,
        code={k: identity[k] for k in ("code", "model", "model_code")},
        environment=environment(params["device"]), **(extra or {}))
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics
