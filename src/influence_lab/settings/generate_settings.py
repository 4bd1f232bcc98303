"""`generate`: m outputs per prompt with fixed seeds; the prompts given, or drawn from the
captions."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from .rules import NonNegativeInt, PositiveInt, PositiveIntOrNull, Seed, Settings, fail, is_list


class GenerateSettings(Settings):
    prompts: Any = (
        None  # a list of prompts (the config's default: ${data.prompts}); unused with prompt_count
    )
    m: PositiveInt = 8  # outputs per prompt
    seed: Seed = 0  # output j of prompt i uses seed (seed + i * seed_stride + j)
    seed_stride: NonNegativeInt = (
        0  # 0: the same m seeds for every prompt; >= m: every output its own seed
    )
    prompt_count: PositiveIntOrNull = (
        None  # instead of `prompts`: draw this many prompts from the captions
    )
    prompt_group: PositiveIntOrNull = None  # ... distinct within consecutive groups of this many
    prompt_seed: Seed = 0  # ... drawn with this seed

    @model_validator(mode="after")
    def _prompts_given(self):
        if self.prompt_count is None:
            if not is_list(self.prompts):
                fail("{key} is {value}; give a list, e.g. {key}='[a red circle]'.", field="prompts")
            if not self.prompts:
                fail("{key} is empty; give at least one prompt.", field="prompts")
            if not all(isinstance(p, str) for p in self.prompts):
                fail("{key} is {value}; each prompt must be a string.", field="prompts")
        return self
