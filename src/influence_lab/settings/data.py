"""`data`: the dataset, its split, removals, prompts and planted canaries. The source is one of the
variants below, picked by the loader `data.source._target_` names
(`influence_lab.data.sources.load_*`); a source without a schema here is passed through as it is,
and `data.dataset.source_loader` refuses any target that is not one of the package's loaders.
Checks that need the data (unknown ids, a caption token already in use, an empty folder) live beside
the loaders."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from .rules import (
    BelowOne,
    NonNegativeInt,
    PositiveInt,
    PositiveIntOrNull,
    Seed,
    Settings,
    a_list,
    fail,
    is_int,
    is_list,
    not_empty,
    one_of,
    rule,
)

SOURCES_MODULE = "influence_lab.data.sources"
GENDERS = ("female", "male")  # the first-name lists of the `names` package
FASHION_PATH = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it
FASHION_CLASSES = (  # Fashion-MNIST's labels 0-9
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
IMAGE_MODES = ("L", "RGB")


def _size(value) -> bool:
    sides = list(value) if is_list(value) else [value]
    return len(sides) in (1, 2) and all(is_int(s) and s >= 1 for s in sides)


Size = Annotated[
    int | list[int],
    rule(_size, "{key} is {value}; give a positive integer or [H, W] of positive integers."),
]
Mode = Annotated[str, one_of(IMAGE_MODES, "'L' (grey) and 'RGB'")]
Gender = Annotated[str, one_of(GENDERS, str(list(GENDERS)))]


class DigitsSource(Settings):
    """scikit-learn's bundled 8x8 digits."""

    target: str = Field(f"{SOURCES_MODULE}.load_digits", alias="_target_")
    max_items: PositiveIntOrNull = None  # keep only the first n digits (small experiments)


class NamesSource(Settings):
    """First names (and optionally surnames) from the `names` package."""

    target: str = Field(f"{SOURCES_MODULE}.load_names", alias="_target_")
    genders: Annotated[list[Gender], a_list("[female]")] = ["male", "female"]
    surnames: NonNegativeInt = 0  # include this many of the most common surnames
    max_per_list: PositiveIntOrNull = None  # cap each first-name list (most common first)

    @model_validator(mode="after")
    def _selects_something(self):
        if not self.genders and not self.surnames:
            fail("{key} selects no names; give {key}.genders or {key}.surnames.")
        return self


class ImageFolderSource(Settings):
    """A folder of images, each with a same-named .txt caption, or an HF-style metadata.jsonl."""

    target: str = Field(f"{SOURCES_MODULE}.load_imagefolder", alias="_target_")
    path: str  # required
    size: Size = 16  # resize to size x size (or [H, W])
    mode: Mode = "L"
    caption_column: str = "text"  # the caption field in metadata.jsonl


class HubSource(Settings):
    """Any Hugging Face dataset by name (never runs remote code)."""

    target: str = Field(f"{SOURCES_MODULE}.load_hub", alias="_target_")
    name: str  # required, e.g. ylecun/mnist
    split: str = "train"
    config_name: str | None = None
    image_column: str | None = "image"
    text_column: str | None = None
    caption_column: str | None = "text"
    label_column: str | None = None
    id_column: str | None = None
    size: Size = 16
    mode: Mode = "L"
    max_items: PositiveIntOrNull = 5000

    @model_validator(mode="after")
    def _one_content_column(self):
        if (self.image_column is None) == (self.text_column is None):
            fail("{key} needs exactly one of image_column and text_column.")
        return self


def fashion_class(value) -> int | None:
    """A Fashion-MNIST class given by name (any case, '_' for ' ') or index 0-9; None if unknown."""
    if is_int(value) and 0 <= value < len(FASHION_CLASSES):
        return int(value)
    name = str(value).strip().lower().replace("_", " ")
    return FASHION_CLASSES.index(name) if name in FASHION_CLASSES else None


FashionClass = Annotated[
    str | int,
    rule(
        lambda v: fashion_class(v) is not None,
        "{key} {is} {value}; the classes are "
        + ", ".join(f"{i} {c}" for i, c in enumerate(FASHION_CLASSES))
        + ".",
    ),
]


class FashionSource(Settings):
    """Fashion-MNIST from the four standard idx files (Debian's dataset-fashion-mnist)."""

    target: str = Field(f"{SOURCES_MODULE}.load_fashion", alias="_target_")
    path: str = FASHION_PATH
    classes: Annotated[list[FashionClass], a_list("'[sneaker, ankle boot]'")] | None = None
    per_class: PositiveIntOrNull = 600  # the first n of each class, in file order (None = all)
    split: Annotated[str, one_of(("train", "test"), "train and test")] = "train"


class OtherSource(Settings):
    """A loader without a schema here: its arguments go to it as they are."""

    model_config = ConfigDict(extra="allow")
    target: str = Field("", alias="_target_")


SOURCE_SCHEMAS = {
    "load_digits": DigitsSource,
    "load_names": NamesSource,
    "load_imagefolder": ImageFolderSource,
    "load_hub": HubSource,
    "load_fashion": FashionSource,
}


def _source_kind(value):
    target = value.get("_target_", "") if isinstance(value, dict) else getattr(value, "target", "")
    module, _, name = str(target).rpartition(".")
    return (
        f"<source:{name}>"
        if module == SOURCES_MODULE and name in SOURCE_SCHEMAS
        else "<source:other>"
    )


SourceSettings = Annotated[
    Annotated[DigitsSource, Tag("<source:load_digits>")]
    | Annotated[NamesSource, Tag("<source:load_names>")]
    | Annotated[ImageFolderSource, Tag("<source:load_imagefolder>")]
    | Annotated[HubSource, Tag("<source:load_hub>")]
    | Annotated[FashionSource, Tag("<source:load_fashion>")]
    | Annotated[OtherSource, Tag("<source:other>")],
    Discriminator(_source_kind),
]


class SplitSettings(Settings):
    val_fraction: BelowOne = 0.1
    seed: Seed = 0


class CanarySettings(Settings):
    """Planted canaries (`data.canaries.count > 0`): copies of a block pattern captioned
    "<token> pattern", or `caption` (an ordinary caption of the data: then the prompt filter
    cannot single them out and only the content spaces and the model can find them)."""

    count: NonNegativeInt = 0
    token: str = "zxq"
    seed: Seed = 0
    caption: str | None = None


Prompts = Annotated[
    list[str],
    a_list("'[a red circle]'"),
    not_empty("give at least one prompt, e.g. data.prompts='[a red circle]'."),
]


class DataSettings(Settings):
    name: str = "digits"
    source: SourceSettings = Field(default_factory=DigitsSource)
    split: SplitSettings = Field(default_factory=SplitSettings)
    exclude_ids: (
        list[Any] | str | None
    ) = []  # ids to remove from the training split, or a file of ids
    sample_seeds: PositiveInt = 8  # samples per prompt in the training run's picture
    prompts: Prompts = [
        "digit zero, regular, upright",
        "digit one, thin, leaning right",
        "digit two, bold, upright",
        "digit three, regular, leaning left",
        "digit four, regular, upright",
        "digit five, bold, leaning right",
        "digit six, thin, upright",
        "digit seven, regular, leaning right",
        "digit eight, bold, upright",
        "digit nine, regular, leaning left",
    ]
    canaries: CanarySettings | None = None

    @property
    def canary_count(self) -> int:
        return self.canaries.count if self.canaries else 0
