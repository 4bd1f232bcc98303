"""`trainer`: the Lightning Trainer's settings. Whether a GPU is there is a question for the
machine, checked by `training.devices.check_accelerator` at a stage's entry."""

from __future__ import annotations

from typing import Annotated

from .rules import Bool, NonNegativeNumber, PositiveIntOrNull, Settings, is_int, one_of, rule

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
GPU_ACCELERATORS = ("gpu", "cuda")


def _devices(value) -> bool:
    """A positive number of devices, -1 (all), or what Lightning reads from a string or list
    ("auto")."""
    if isinstance(value, (bool, float)) or value is None:
        return False
    return not is_int(value) or value >= 1 or value == -1


class TrainerSettings(Settings):
    accelerator: Annotated[str, one_of(ACCELERATORS)] = "cpu"
    devices: Annotated[
        int | str | list[int],
        rule(_devices, "{key} is {value}; use a positive number of devices, -1 (all) or auto."),
    ] = 1
    precision: str | int = "32-true"
    deterministic: Bool = True
    progress_bar: Bool = True
    num_threads: PositiveIntOrNull = None  # torch threads; None keeps torch's default
    checkpoint_every_s: NonNegativeNumber = 5  # save checkpoints/last.ckpt at most this often
