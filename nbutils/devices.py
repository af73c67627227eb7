"""Where to train: my_utils' ``try_gpu``, and the checks that turn a device name into a device."""
from __future__ import annotations

import torch

__all__ = ["resolve_device", "try_all_gpus", "try_gpu", "use_fast_path"]


def try_gpu(i=0):
    """``cuda:i`` if it exists, else the CPU (my_utils)."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus():
    """All GPUs, or ``[cpu]`` if there is none (my_utils)."""
    devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return devices if devices else [torch.device("cpu")]


def resolve_device(device=None) -> torch.device:
    """``None``/``"auto"``: the first GPU if any, else the CPU. An explicit GPU that is absent is an error."""
    if device is None or device == "auto":
        return try_gpu()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or "
                             f"'cpu' (in Colab: Runtime > Change runtime type > GPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def use_fast_path(fast, device):
    """The ``fast`` parameter read for ``device``: "on" and "eager" (no CUDA graphs) ask for the fast
    path, "auto" takes it on a GPU, "off" runs my_utils' loop."""
    return fast in ("on", "eager") or (fast == "auto" and torch.device(device).type == "cuda")
