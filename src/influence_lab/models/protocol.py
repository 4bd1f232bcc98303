"""What every generative model shares: the model protocol (docs/architecture.md) and the
Lightning plumbing.

- `sample(prompts, seeds)`: one output per (prompt, seed), deterministic given the seed;
- `example_loss(batch, noise_seed) -> Tensor[B]`: per-example loss with fixed noise
  (= `measured_loss(prepare(batch), measure_noise(B, noise_seed))`, the split that lets gradient
  attributors differentiate it per example under `torch.func`);
- `embed(batch) -> Tensor[B, d]`: the model's own latent representation.

A batch is `{"content": Tensor (images) or list[str] (texts), "caption": list[str]}`.
`prepare(batch)` adds the tensors the pure-tensor code needs (`bags`, and token ids for texts), so
that `loss(batch, noise)` can run under `torch.func.vmap` for packs of models. Training noise
comes from `draw_noise(n, generator)` with a generator seeded by (seed, step), so a model trained
alone and the same model trained inside a pack see the same noise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from .text_encoder import BagOfWords

NOISE_SEED = (
    0  # the fixed noise of every measured `example_loss` (counterfactual targets, LDS, gradients)
)


# the constructor arguments that come from the data, not from the settings (models/build.py)
DATA_ARGS = ("data_shape", "alphabet", "vocab")


class GenerativeModel(pl.LightningModule):
    kind = "image"  # or "text"
    # the settings schema a built-in's constructor takes as its first argument (settings/model.py,
    # the one home of its defaults), after which come only the data's arguments (`DATA_ARGS`);
    # None: a user's model class, constructed from keyword arguments (its YAML's keys)
    settings_class: ClassVar[type | None] = None
    packable = True  # members of this class train faster as one vmapped pack than one by one
    pack_on_cpu = True  # ... on a CPU too (False: packs only on an accelerator)

    def __init__(
        self, vocab: list[str], conditional: bool, cond_dim: int, lr: float, weight_decay: float
    ):
        super().__init__()
        self.conditional = conditional
        self.cond_dim = cond_dim
        self.text = BagOfWords(vocab, cond_dim) if conditional else None

    @classmethod
    def from_init(cls, init: dict[str, Any], settings=None) -> GenerativeModel:
        """The model of the plain arguments `init` (what model.json records: the settings' values
        and the data's): a built-in from its settings (`settings`, already typed, or validated
        from `init`) and the data's arguments; a user's class from them all as keywords."""
        if cls.settings_class is None:
            return cls(**init)
        data = {k: v for k, v in init.items() if k in DATA_ARGS}
        if not isinstance(settings, cls.settings_class):
            plain = {k: v for k, v in init.items() if k not in DATA_ARGS}
            settings = cls.settings_class.model_validate(plain)
        return cls(settings, **data)

    noise_seed = 0  # the training seed; set by the trainer
    record_losses = False  # keep every step's loss in `loss_history` (equivalence checks)

    @property
    def loss_history(self) -> list[float]:
        if "_loss_history" not in self.__dict__:
            self.__dict__["_loss_history"] = []
        return self.__dict__["_loss_history"]

    # --- conditioning -------------------------------------------------------------------------
    def condition(self, captions: list[str], drop: torch.Tensor | None = None) -> torch.Tensor:
        if self.text is None:
            return torch.zeros(len(captions), self.cond_dim, device=self.device)
        return self.text(captions, drop)

    def cond(self, batch: dict, drop: torch.Tensor | None = None) -> torch.Tensor:
        """The condition of a batch, from its precomputed `bags` when present."""
        if "bags" not in batch:
            return self.condition(batch["caption"], drop)
        bags = batch["bags"]
        if self.text is None:
            return bags.new_zeros(bags.shape[0], self.cond_dim)
        return self.text.embed_bags(bags, drop)

    def prepare(self, batch: dict) -> dict:
        """Add the tensors that `loss` needs and that take Python to compute (caption bags)."""
        if "bags" not in batch:
            bags = (
                self.text.bags(batch["caption"])
                if self.text is not None
                else torch.zeros(len(batch["caption"]), 1)
            )
            batch = {**batch, "bags": bags.to(self.device)}
        return batch

    # --- protocol -----------------------------------------------------------------------------
    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random number one training step of n examples needs."""
        return {}

    def loss(
        self, batch, noise: dict[str, torch.Tensor]
    ) -> torch.Tensor:  # per-example training loss
        raise NotImplementedError

    def measure_noise(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """The fixed noise of `example_loss` for n examples, example first (row i is example
        i's)."""
        return {}

    def measured_loss(self, batch, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example loss of a prepared batch under the fixed noise of `measure_noise`."""
        raise NotImplementedError

    def example_loss(self, batch, noise_seed: int = 0) -> torch.Tensor:
        batch = self.prepare(batch)
        noise = self.measure_noise(len(batch["caption"]), noise_seed)
        return self.measured_loss(batch, {k: v.to(self.device) for k, v in noise.items()})

    def sample(self, prompts: list[str], seeds: list[int]):
        raise NotImplementedError

    def embed(self, batch) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def output_functions(cls) -> list[str]:
        """The output functions gradient attributors may differentiate: `measured` (the measured
        loss) and one per `output_<name>` method the class defines (D-TRAK's `dtrak`); an
        attributor that needs one is offered for every model class that has it."""
        return ["measured"] + sorted(
            name[len("output_") :]
            for name in dir(cls)
            if name.startswith("output_")
            and name != "output_functions"
            and callable(getattr(cls, name))
        )

    def forward(self, batch, noise, output: str = "loss"):
        """What `functional_call` runs: the per-example training loss (packs), the measured loss
        (`output="measured"`) or another output function of the model (`output_<name>`)."""
        if output == "loss":
            return self.loss(batch, noise)
        if output == "measured":
            return self.measured_loss(batch, noise)
        return getattr(self, f"output_{output}")(batch, noise)

    # --- Lightning ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        batch = self.prepare(batch)
        n = len(batch["caption"])
        noise = {
            k: v.to(self.device)
            for k, v in self.draw_noise(
                n, step_generator(self.noise_seed, self.global_step)
            ).items()
        }
        loss = self.loss(batch, noise).mean()
        if self.record_losses:
            self.loss_history.append(float(loss.detach()))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.example_loss(batch, noise_seed=0).mean()
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["caption"]))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.trainer is None or not self.trainer.max_epochs or self.trainer.max_epochs < 0:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=self.trainer.max_epochs, eta_min=self.hparams.lr * 0.05
        )
        return {"optimizer": opt, "lr_scheduler": sched}


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step of the model trained with `seed`."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))


def seeded_normal(seed: int, shape, device=None) -> torch.Tensor:
    """Standard normal noise that depends only on `seed` (not on the global RNG)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(*shape, generator=gen).to(device)


def seeded_uniform(seed: int, shape, device=None) -> torch.Tensor:
    """Uniform noise in [0, 1) that depends only on `seed` (not on the global RNG)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(*shape, generator=gen).to(device)
