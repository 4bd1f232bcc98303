"""`attribution` (with its `index` and `gradient` parts) and `embedders` (the latent spaces, one of
three kinds). The method names, index types and metrics, prompt filters and embedder kinds are
declared here and imported by the code that implements them; the attribution methods are not: they
live in the attribution registry, which checks them at a stage's entry. Checks across sections (an
embedder named is set) are in `stage.StageSettings`; a pretrained embedder's
weights file is checked at a stage's entry by `attribution.embedders.check_weights`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from .rules import (
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
)

PROJECTORS = ("sparse", "normal")
PROJECTOR_SETTINGS = ("auto", *PROJECTORS)
INDEX_TYPES = ("flat", "ivf", "hnsw")
INDEX_METRICS = ("ip", "l2")
FILTERS = ("tfidf", "bm25")
FEATURE_DTYPES = ("float32", "float16")
EMBEDDER_KINDS = ("model", "autoencoder", "classifier", "pretrained")
METHOD_NAME = re.compile(r"[A-Za-z_]\w*(:[\w.-]+)?")  # a label, or `<name>:<option>`
CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")  # module.Class

# A method is a name of the attribution registry (attribution/methods/registry.py) or a label of
# `custom_methods`; which names exist and what each needs is checked there, at a stage's entry.
Method = Annotated[
    str,
    rule(
        lambda v: isinstance(v, str) and METHOD_NAME.fullmatch(v),
        "{key} {is} {value}; give a method name, e.g. fused or latent:model.",
    ),
]
ClassPath = Annotated[
    str,
    rule(
        lambda v: isinstance(v, str) and CLASS_PATH.fullmatch(v),
        "{key} {is} {value}; give a class path, e.g. mylab.attributors.PixelNeighbours.",
    ),
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
    # {method: damping} fixed for these methods: no LDS run's choice is looked up for them, so every
    # replicate of an experiment uses the same (e.g. the LDS benchmark's choice, recorded). Not in
    # conf/attribute.yaml (the attribute signatures hash the config as given): set it in an
    # experiment or with `+attribution.gradient.pinned_dampings={trak:10}`
    pinned_dampings: dict[str, PositiveNumber] | None = None
    # the random projection: sparse (JL sketch, 4 nonzeros per parameter) | normal (dense
    # Gaussian, D-TRAK's) | auto (each method's own: its class's `projector`)
    projector: Annotated[str, one_of(PROJECTOR_SETTINGS)] = "auto"
    dtrak_timesteps: PositiveInt = 10  # D-TRAK: K timesteps evenly spaced over the schedule
    # featurise the training set in shards of this many items (a multiple of 64), each its own
    # claimed result, read back memory-mapped (docs/scale.md); null: one array. Not in
    # conf/attribute.yaml (the attribute signatures hash the config as given): set with `+`
    shard_size: PositiveIntOrNull = None
    feature_dtype: Annotated[str, one_of(FEATURE_DTYPES)] = "float32"  # features on disk

    @model_validator(mode="after")
    def _shards_of_whole_chunks(self):
        if self.shard_size is not None and self.shard_size % 64:
            fail(
                "{key}.shard_size is {size}; it must be a multiple of 64 (the gradient chunks), "
                "e.g. {suggestion}.",
                size=self.shard_size,
                suggestion=max(64, self.shard_size // 64 * 64),
            )
        return self


class UnlearnSettings(Settings):
    """`unlearn` (attribution by unlearning, AbU): Fisher-preconditioned loss ascent on the target's
    outputs. Not in conf/attribute.yaml (the attribute signatures hash the config as given): set
    with `+attribution.unlearn.lr=0.05`."""

    steps: PositiveInt = 1  # ascent steps, each with the gradient at the current weights
    lr: PositiveNumber = 0.001  # the step size (the authors use 0.01 on their scale; see docs)
    # delta, relative to the mean of N x the Fisher diagonal over each parameter tensor
    fisher_damping: PositiveNumber = 0.1
    # noise draws the target's gradient and each training item's loss are averaged over
    noise_draws: PositiveInt = 8


class AttributionSettings(Settings):
    methods: Methods = "auto"
    # a user's attributors: {label: "module.Class"}, the module under a prefix of `plugins`; the
    # label is then a method like a built-in (attribution.methods, counterfactual.methods, lds)
    custom_methods: dict[str, ClassPath] = {}
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
    unlearn: UnlearnSettings = Field(default_factory=UnlearnSettings)


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
