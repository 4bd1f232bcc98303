"""`attribution` (with its `index` and `gradient` parts) and `embedders` (the latent spaces, one of
three kinds). The method names, index types and metrics, prompt filters and embedder kinds are
declared here and imported by the code that implements them. Checks across sections (a method's
embedder is listed, dtrak only for ddpm) are in `stage.StageSettings`; a pretrained embedder's
weights file is checked at a stage's entry by `attribution.embedders.check_weights`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from .base import (
    RULE,
    Number,
    OnceEach,
    PositiveInt,
    PositiveIntOrNull,
    PositiveNumber,
    Seed,
    Settings,
    a_list,
    auto_or,
    fail,
    not_empty,
    one_of,
    rule,
    show,
)

BASE_METHODS = ("paper", "fused", "caption_only", "raw_only", "latent_only")
GRADIENT_METHODS = ("tracin", "trak", "dtrak")
DIFFUSION_MODELS = ("ddpm", "ldm")
DIFFUSION_ONLY = {"dtrak": DIFFUSION_MODELS}  # gradient methods defined for diffusion models only
PROJECTORS = ("sparse", "normal")
PROJECTOR_SETTINGS = ("auto", *PROJECTORS)
AUTO_METHODS = ("fused", "caption_only", "raw_only", "latent_only")  # `auto` (+ paper for images)
LATENT_PREFIX = "latent:"
INDEX_TYPES = ("flat", "ivf", "hnsw")
INDEX_METRICS = ("ip", "l2")
FILTERS = ("tfidf", "bm25")
EMBEDDER_KINDS = ("model", "autoencoder", "classifier", "pretrained")
METHODS_SHOWN = f"{', '.join(BASE_METHODS)}, latent:<embedder>, tracin, trak and dtrak"


def _known_method(value) -> bool:
    return isinstance(value, str) and (
        value in BASE_METHODS or value in GRADIENT_METHODS or value.startswith(LATENT_PREFIX)
    )


Method = Annotated[
    str, rule(_known_method, "{key} {is} {value}; allowed values are " + METHODS_SHOWN + ".")
]
Methods = auto_or(
    Annotated[
        list[Method],
        a_list("[fused,raw_only]"),
        not_empty("give at least one method, or auto."),
        OnceEach,
    ]
)
EmbedderNames = Annotated[list[str], a_list("[model,autoencoder]"), OnceEach]


def projector_kind(setting: str, method: str) -> str:
    """The projection a gradient method uses: attribution.gradient.projector, where `auto` is
    D-TRAK's own (normal) for dtrak and the sparse sketch for tracin and trak."""
    if setting != "auto":
        return setting
    return "normal" if method == "dtrak" else "sparse"


def method_list(methods) -> list[str] | None:
    """The methods named, or None for auto."""
    return None if methods == "auto" else list(methods)


class IndexSettings(Settings):
    type: Annotated[str, one_of(INDEX_TYPES)] = "flat"  # flat (exact) | ivf | hnsw
    metric: Annotated[str, one_of(INDEX_METRICS, "ip and l2")] = (
        "ip"  # ip (cosine on normalised vectors) | l2
    )
    nlist: PositiveInt = 64  # ivf: clusters (capped at n/4)
    nprobe: PositiveInt = 8  # ivf: clusters searched
    hnsw_m: PositiveInt = 32  # hnsw: links per node
    ef_search: PositiveInt = 128  # hnsw: search breadth


class GradientSettings(Settings):
    proj_dim: PositiveInt = 4096  # dimension of the random projection of per-example gradients
    proj_seed: Seed = 0
    ensemble: PositiveInt = (
        4  # TRAK / D-TRAK: models trained on the full set with seeds seed, seed+1, ...
    )
    damping: PositiveNumber = 1.0  # TRAK: lambda, relative to the mean diagonal of Phi^T Phi
    # the random projection: sparse (JL sketch, 4 nonzeros per parameter) | normal (dense
    # Gaussian, D-TRAK's) | auto (normal for dtrak, sparse for tracin and trak)
    projector: Annotated[str, one_of(PROJECTOR_SETTINGS)] = "auto"
    dtrak_timesteps: PositiveInt = 10  # D-TRAK: K timesteps evenly spaced over the schedule


class AttributionSettings(Settings):
    methods: Methods = "auto"
    filter: Annotated[str, one_of(FILTERS)] = "tfidf"  # prompt filter over captions
    pool_size: PositiveIntOrNull = (
        100  # candidate pool of the prompt filter; None = every item, graded B
    )
    embedders: EmbedderNames = ["model", "autoencoder"]  # latent spaces used (keys of `embedders`)
    # the latent space of the paper scorer's embedding features; auto: see `paper_space`
    paper_embedder: str = "auto"
    fused_weights: dict[str, Number] = {
        "raw_cosine": 1.0,
        "raw_l2": 1.0,
        "raw_ssim": 1.0,
        "raw_hist": 0.5,
        "raw_edit": 1.0,
        "raw_ngram": 1.0,
        "latent_model": 1.0,
        "latent_autoencoder": 1.0,
    }  # missing = 1
    index: IndexSettings = Field(default_factory=IndexSettings)
    search_k: PositiveIntOrNull = (
        None  # neighbours fetched per output from the whole index (None = all)
    )
    keep: PositiveInt = 100  # ranked rows kept per target and method
    grid_top: PositiveInt = 10  # training items shown in each neighbour grid
    gradient: GradientSettings = Field(default_factory=GradientSettings)

    @model_validator(mode="after")
    def _embedders_for_methods(self):
        methods = method_list(self.methods)
        if (
            methods
            and "paper" in methods
            and self.paper_embedder != "auto"
            and self.paper_embedder not in self.embedders
        ):
            fail(
                "{key}.paper_embedder {chosen} is not in {key}.embedders.",
                chosen=show(self.paper_embedder),
            )
        if (methods is None or "latent_only" in methods) and not self.embedders:
            fail("latent_only needs at least one embedder in {key}.embedders.")
        return self


class ModelEmbedder(Settings):
    kind: Literal["model"] = "model"  # the generator's own embed()


class AutoencoderEmbedder(Settings):
    """A small autoencoder trained once on the dataset, cached by signature."""

    kind: Literal["autoencoder"] = "autoencoder"
    hidden: PositiveInt = 256
    latent_dim: PositiveInt = 32
    epochs: PositiveInt = 40
    lr: PositiveNumber = 0.001
    seed: Seed = 0


class ClassifierEmbedder(Settings):
    """A small CNN trained once on the dataset's labels, cached by signature: its penultimate
    layer is the feature space (the stand-in for the paper's ImageNet ResNet-50)."""

    kind: Literal["classifier"] = "classifier"
    epochs: PositiveInt = 20
    seed: Seed = 0


class PretrainedEmbedder(Settings):
    """A torchvision backbone from a local weights file (never downloaded)."""

    kind: Literal["pretrained"] = "pretrained"
    arch: str = "resnet18"
    weights: str | None = None
    input_size: PositiveInt = 64


def _embedder_kind(value):
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return f"<embedder:{kind}>" if kind in EMBEDDER_KINDS else None


EmbedderSettings = Annotated[
    Annotated[ModelEmbedder, Tag("<embedder:model>")]
    | Annotated[AutoencoderEmbedder, Tag("<embedder:autoencoder>")]
    | Annotated[ClassifierEmbedder, Tag("<embedder:classifier>")]
    | Annotated[PretrainedEmbedder, Tag("<embedder:pretrained>")],
    Discriminator(
        _embedder_kind,
        custom_error_type=RULE,
        custom_error_message="unknown embedder kind",
        custom_error_context={
            "template": "{key} is {value}; allowed values are " + ", ".join(EMBEDDER_KINDS) + ".",
            "field": "kind",
        },
    ),
]


def paper_space(paper_embedder: str, labelled: bool) -> str:
    """The embedder of the paper scorer's embedding features. `auto`: the classifier where the data
    has labels (a CNN's feature layer, the stand-in for the ImageNet ResNet-50 the method was
    published with), else the autoencoder."""
    if paper_embedder != "auto":
        return paper_embedder
    return "classifier" if labelled else "autoencoder"


def search_space_names(att: AttributionSettings, methods: list[str], labelled: bool) -> list[str]:
    """The embedders an attribution builds: `attribution.embedders` (searched, and signals of the
    fused scorer) and the paper scorer's space (only its features)."""
    names = list(att.embedders)
    if "paper" in methods:
        space = paper_space(att.paper_embedder, labelled)
        names += [] if space in names else [space]
    return names


def resolve_methods(methods, kind: str) -> list[str]:
    """The methods `auto` stands for on data of `kind` ("image" or "text"), or the methods named."""
    if methods is None or methods == "auto":
        return (["paper"] if kind == "image" else []) + list(AUTO_METHODS)
    return [str(methods)] if isinstance(methods, str) else [str(m) for m in methods]
