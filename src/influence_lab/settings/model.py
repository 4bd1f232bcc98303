"""`model`: the generative model, one of five variants picked by `model.name` (or, for a renamed
model, by the class `_target_` names): `vae`, `ddpm`, `ldm`, `chargpt`, `dalle`, or a user's own
class (`custom`: a `_target_` outside influence_lab). `_target_` itself is checked where the class
is imported (`models.build.model_class`: influence_lab models, and classes under the module
prefixes the config's `plugins` allows).

These schemas are the one home of every model default: a built-in model class's constructor takes
its schema (`VAE(settings: VAESettings, data_shape, vocab)`), and conf/model/*.yaml repeats the
values only because signatures hash the config as given (tests/test_settings.py fails when a YAML
differs from its schema). `BUILT_IN_MODELS` is the one list of them: the names, the union the
settings validate against and the picking of a variant all come from it."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from .rules import (
    RULE,
    BelowOne,
    Bool,
    NonNegativeInt,
    NonNegativeIntOrNull,
    NonNegativeNumber,
    Number,
    PositiveInt,
    PositiveNumber,
    Settings,
    fail,
    one_of,
)

VAE_ARCHS = ("mlp", "conv")
DDPM_ARCHS = ("mlp", "unet")
NOT_INIT_ARGS = ("_target_", "name", "fit")  # settings that are not the model class's arguments
# constructor arguments that act only when sampling (DDPM/LDM guidance, CharGPT and DALL-E
# temperature, DALL-E's top-k filter): they
# are no part of a train signature, and a trained model samples with the current config's values
SAMPLING_ARGS = ("guidance", "temperature", "filter_thres")


class FitSettings(Settings):
    max_epochs: PositiveInt = 60
    batch_size: PositiveInt = 128
    snapshots: NonNegativeIntOrNull = (
        4  # weights saved at evenly spaced epochs (TracIn's checkpoints)
    )


class ModelBase(Settings):
    target: str = Field("", alias="_target_")
    name: str = ""

    def init_args(self) -> dict:
        """The model class's constructor arguments (without the data-dependent ones)."""
        return {k: v for k, v in self.plain().items() if k not in NOT_INIT_ARGS}

    def sampling_args(self) -> dict:
        """The settings that act only at sampling time (`SAMPLING_ARGS`) this model has."""
        return {k: v for k, v in self.plain().items() if k in SAMPLING_ARGS}


class VAESettings(ModelBase):
    """Caption-conditioned VAE for small images."""

    target: str = Field("influence_lab.models.VAE", alias="_target_")
    name: str = "vae"
    conditional: Bool = True
    arch: Annotated[str, one_of(VAE_ARCHS, "'mlp' and 'conv'")] = "mlp"
    hidden: PositiveInt = 256
    latent_dim: PositiveInt = 16
    cond_dim: PositiveInt = 32
    beta: NonNegativeNumber = 1.0
    lr: PositiveNumber = 0.002
    weight_decay: NonNegativeNumber = 0.0
    fit: FitSettings = Field(default_factory=lambda: FitSettings(max_epochs=60))


class DiffusionSettings(ModelBase):
    """What the pixel-space DDPM and the latent DDPM share: the caption conditioning, the noise
    schedule, classifier-free guidance and the fixed timesteps of the measured loss."""

    conditional: Bool = True
    cond_dim: PositiveInt = 64
    timesteps: PositiveInt = 200
    p_uncond: BelowOne = 0.1  # caption dropout during training (for guidance)
    guidance: Number = 2.0  # classifier-free guidance scale at sampling time
    loss_timesteps: PositiveInt = 10  # fixed timesteps of example_loss
    weight_decay: NonNegativeNumber = 0.0


class DDPMSettings(DiffusionSettings):
    """Small caption-conditioned DDPM with classifier-free guidance."""

    target: str = Field("influence_lab.models.DDPM", alias="_target_")
    name: str = "ddpm"
    arch: Annotated[str, one_of(DDPM_ARCHS, "'mlp' and 'unet'")] = "mlp"
    hidden: PositiveInt = 256
    depth: PositiveInt = 3
    lr: PositiveNumber = 0.002
    fit: FitSettings = Field(default_factory=lambda: FitSettings(max_epochs=150))


class LDMSettings(DiffusionSettings):
    """Latent DDPM: the DDPM's diffusion over the latents of a VAE trained once on the pool and
    then frozen (models.latent_ddpm); defaults tuned on Fashion-MNIST for a CPU."""

    target: str = Field("influence_lab.models.LatentDDPM", alias="_target_")
    name: str = "ldm"
    latent_dim: PositiveInt = 16  # size of the autoencoder's latent the denoiser diffuses
    ae_hidden: PositiveInt = 512  # autoencoder width (layers ae_hidden and ae_hidden / 2)
    ae_epochs: PositiveInt = 30  # autoencoder epochs over the whole pool (trained once)
    ae_lr: PositiveNumber = 0.002
    ae_seed: NonNegativeInt = 0  # the autoencoder's seed: the same for every model of a dataset
    hidden: PositiveInt = 512
    depth: PositiveInt = 4
    lr: PositiveNumber = 0.001
    fit: FitSettings = Field(default_factory=lambda: FitSettings(max_epochs=100))


class CharGPTSettings(ModelBase):
    """Caption-conditioned character-level transformer for names."""

    target: str = Field("influence_lab.models.CharGPT", alias="_target_")
    name: str = "chargpt"
    conditional: Bool = True
    block_size: PositiveInt = 24
    n_layer: PositiveInt = 3
    n_head: PositiveInt = 4
    n_embd: PositiveInt = 96
    dropout: BelowOne = 0.0
    temperature: PositiveNumber = 1.0
    lr: PositiveNumber = 0.003
    weight_decay: NonNegativeNumber = 0.01
    caption_gain: NonNegativeNumber = 30.0
    fit: FitSettings = Field(default_factory=lambda: FitSettings(max_epochs=20))

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.n_embd % self.n_head:
            fail(
                "{key}.n_embd is {n_embd} but {key}.n_head is {n_head}; "
                "n_embd must be a multiple of n_head.",
                n_embd=self.n_embd,
                n_head=self.n_head,
            )
        return self


class DalleSettings(ModelBase):
    """A small DALL-E (models.dalle): a VQ image tokenizer fitted once on the pool and frozen,
    and a causal transformer over [caption word tokens ; image tokens]."""

    target: str = Field("influence_lab.models.DALLE", alias="_target_")
    name: str = "dalle"
    conditional: Bool = True
    # the tokenizer: images -> a grid of codebook entries (a 28x28 image -> 7x7 tokens, an 8x8
    # digit -> 4x4; `downsample` null picks the smallest power of two that gives at most 8 a side)
    codebook_size: PositiveInt = 256
    code_dim: PositiveInt = 32
    downsample: NonNegativeIntOrNull = None
    tok_hidden: PositiveInt = 64
    tok_epochs: PositiveInt = 20
    tok_lr: PositiveNumber = 0.002
    tok_seed: NonNegativeInt = 0  # the tokenizer's seed: the same for every model of a dataset
    tok_refit: Bool = False  # fit the tokenizer on each retrain's own training set
    # the transformer
    text_len: PositiveInt = 8  # caption words read (a longer caption is refused)
    dim: PositiveInt = 128
    depth: PositiveInt = 4
    heads: PositiveInt = 4
    dropout: BelowOne = 0.0
    loss_img_weight: NonNegativeNumber = 7.0  # DALL-E's weight of the image tokens' loss
    temperature: PositiveNumber = 1.0
    filter_thres: BelowOne = 0.5  # sampling keeps the top (1 - filter_thres) of the logits
    lr: PositiveNumber = 0.002
    weight_decay: NonNegativeNumber = 0.01
    fit: FitSettings = Field(default_factory=lambda: FitSettings(max_epochs=12, batch_size=128))

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.dim % self.heads:
            fail(
                "{key}.dim is {dim} but {key}.heads is {heads}; dim must be a multiple of heads.",
                dim=self.dim,
                heads=self.heads,
            )
        return self


class CustomModelSettings(ModelBase):
    """A user's own model (`GenerativeModel` subclass in a module `plugins` allows): `_target_`
    names the class, `name` labels its results, `fit` is read as for every model, and every other
    key is passed to the class's constructor (its own defaults fill the rest). Checked where the
    class is imported (`models.build.model_class`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_default=False)
    target: str = Field(..., alias="_target_")
    name: str = "custom"
    fit: FitSettings = Field(default_factory=FitSettings)


# The built-in models, name -> schema: a new one is its schema above and one line here, its class
# in models/ (exported by models/__init__.py, as its schema's `_target_` names it) and
# conf/model/<name>.yaml (docs/extending.md).
BUILT_IN_MODELS: dict[str, type[ModelBase]] = {
    "vae": VAESettings,
    "ddpm": DDPMSettings,
    "ldm": LDMSettings,
    "chargpt": CharGPTSettings,
    "dalle": DalleSettings,
}
MODEL_NAMES = tuple(BUILT_IN_MODELS)
BUILT_IN = "influence_lab."
# a renamed built-in model is picked by the class its `_target_` names
_BY_CLASS = {
    schema.model_fields["target"].default.rpartition(".")[2].lower(): name
    for name, schema in BUILT_IN_MODELS.items()
}


def _model_kind(value):
    get = value.get if isinstance(value, dict) else lambda k, d=None: getattr(value, k, d)
    name = get("name")
    target = str(get("_target_", get("target", "")) or "")
    if target and not target.startswith(BUILT_IN):  # a user's class (plugins)
        return "<model:custom>"
    if name not in MODEL_NAMES:  # a renamed model: its class decides
        name = _BY_CLASS.get(target.rpartition(".")[2].lower())
    return f"<model:{name}>" if name in MODEL_NAMES else None


_VARIANTS = tuple(
    Annotated[schema, Tag(f"<model:{name}>")] for name, schema in BUILT_IN_MODELS.items()
) + (Annotated[CustomModelSettings, Tag("<model:custom>")],)

ModelSettings = Annotated[
    Union[_VARIANTS],  # noqa: UP007  (a union built from the registry)
    Discriminator(
        _model_kind,
        custom_error_type=RULE,
        custom_error_message="unknown model",
        custom_error_context={
            "template": "{key} is {value}; allowed values are " + ", ".join(MODEL_NAMES) + ".",
            "field": "name",
        },
    ),
]
