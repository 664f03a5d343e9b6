"""Turn a user's ``--device`` choice into a torch device, failing loudly when it cannot be honoured."""
from __future__ import annotations

import re

import torch


def resolve_device(choice: str | torch.device = "auto") -> torch.device:
    """'auto' (CUDA if present, else CPU), 'cpu', 'cuda' or 'cuda:i'; ValueError if the GPU is not there."""
    if isinstance(choice, torch.device):
        choice = str(choice)
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", choice)
    if not match:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>; got {choice!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {choice} requested but no CUDA GPU is available on this machine")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {choice}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


#: Rows per generator call when the user names none, by device type. On CPU the activations of a small batch
#: stay in cache and a large one is slower (benchmarks/README.md, "sampler batch"); a GPU needs large batches
#: to fill its cores.
DEFAULT_BATCH = {"cpu": 64, "cuda": 256}


def default_batch(device: torch.device | str) -> int:
    """The default ``--batch`` for ``device`` (see ``DEFAULT_BATCH``)."""
    kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
    return DEFAULT_BATCH.get(kind, DEFAULT_BATCH["cpu"])
