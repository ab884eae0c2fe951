"""Save and resume training state; loading never unpickles arbitrary objects (`weights_only=True`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

LAST = "last.pt"
PARTIAL = LAST + ".tmp"  # written first, then renamed over LAST: a stopped save never leaves half a checkpoint


def save(out_dir: str | Path, state: dict) -> Path:
    """Write `state` (tensors, state dicts, numbers, strings, lists, dicts) atomically as last.pt."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = out_dir / LAST, out_dir / PARTIAL
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def remove(out_dir: str | Path) -> None:
    """Delete the checkpoint (and any save it was stopped in), so the next run starts over."""
    for name in (LAST, PARTIAL):
        (Path(out_dir) / name).unlink(missing_ok=True)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}; run a training stage first (python -m ros_anonymizer_training ...).") from None
    except Exception as e:  # weights_only refuses anything that is not plain data
        raise ValueError(f"checkpoint {path} cannot be loaded safely ({e.__class__.__name__}); it was not written by this trainer.") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it to the GPU
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
