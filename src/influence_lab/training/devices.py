"""Whether the accelerator the trainer settings ask for is there: a question for the machine,
asked at a stage's entry (the settings' schema checks only that the name is known)."""

from __future__ import annotations

from ..errors import InfluenceLabError
from ..settings.trainer import GPU_ACCELERATORS, TrainerSettings


def check_accelerator(trainer: TrainerSettings) -> None:
    accelerator = trainer.accelerator
    if accelerator not in GPU_ACCELERATORS:
        return
    import torch

    mps = (
        accelerator == "gpu"
        and getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    )
    if not torch.cuda.is_available() and not mps:
        raise InfluenceLabError(
            f"trainer.accelerator is '{accelerator}' but no GPU is available here; use trainer=cpu."
        )


def torch_device(trainer: TrainerSettings) -> str:
    """The torch device of the trainer settings' accelerator ('auto': cuda when there is one),
    for the work a stage does outside Lightning (per-example gradients) and for whether members
    pack: cuda, mps, or cpu."""
    import torch

    accelerator = trainer.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in GPU_ACCELERATORS:
        return "cuda" if torch.cuda.is_available() else "mps"
    return accelerator  # cpu or mps
