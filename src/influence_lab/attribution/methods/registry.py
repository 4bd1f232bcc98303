"""The registry: the one place attribution method names live. A built-in is one line of
`BUILT_INS`; `latent:<embedder>` is a method with an option; a user's attributor is a class named
in `attribution.custom_methods` ({label: "module.Class"}) under a module prefix that `plugins`
allows, checked before its module is imported (as model classes are, `models.build`).

`resolved_methods` turns the names of a stage's settings into `Method`s (label, class, option)
once, at the stage's entry (entry/plan.py), `auto` expanded, refusing every method that is
unknown or whose needs the model class, the data or the settings cannot meet, in one sentence
naming the missing capability; `Method.build` gives a prepared-to-be attributor."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InfluenceLabError
from ...models.build import allowed_class
from .attributor import CAPABILITIES, OUTPUT_PREFIX, Attributor, Traits, spaces_read
from .gradient import DAS, DTrak, TracIn, Trak
from .kronecker import EKFAC, KFAC
from .protocols import DampingGrid
from .search import CaptionOnly, Fused, LatentOnly, LatentSpace, Paper, RawOnly
from .unlearning import Unlearn

BUILT_INS: dict[str, type[Attributor]] = {
    "paper": Paper,
    "fused": Fused,
    "caption_only": CaptionOnly,
    "raw_only": RawOnly,
    "latent_only": LatentOnly,
    "tracin": TracIn,
    "trak": Trak,
    "dtrak": DTrak,
    "das": DAS,
    "unlearn": Unlearn,
    "kfac": KFAC,
    "ekfac": EKFAC,
}
WITH_OPTION: dict[str, type[Attributor]] = {"latent": LatentSpace}  # `latent:<embedder>`
PACKAGE = "influence_lab.attribution"


def shown(custom: dict | None = None) -> str:
    names = [*BUILT_INS, *(f"{p}:<embedder>" for p in WITH_OPTION), *(custom or {})]
    return ", ".join(names[:-1]) + " and " + names[-1]


def plugin_class(label: str, target: str, plugins: list[str]) -> type[Attributor]:
    """The user's attributor class `target` (attribution.custom_methods.<label>): refused unless
    its module is under a prefix of `plugins` (then nothing is imported) and it is an
    Attributor subclass with traits."""
    package = str(target).partition(".")[0] or "mylab"
    cls = allowed_class(
        target,
        f"attribution.custom_methods.{label}",
        plugins,
        Attributor,
        f"the modules plugins allows ({', '.join(plugins) or 'none'}); add its package to "
        f"plugins, e.g. plugins=[{package}].",
        "an Attributor; it must name a subclass of influence_lab.attribution.methods.Attributor "
        "with traits.",
    )
    if not isinstance(getattr(cls, "traits", None), Traits):
        raise InfluenceLabError(
            f"attribution.custom_methods.{label} is '{target}', which has no traits; set "
            "traits = Traits(family=...) on the class."
        )
    return cls


def method_class(
    name: str, att, plugins: list[str], key: str = "attribution.methods"
) -> tuple[type[Attributor], str | None]:
    """(class, option) of the method `name` of the setting `key`."""
    custom = dict(att.custom_methods or {})
    if name in custom:
        return plugin_class(name, custom[name], plugins), None
    if name in BUILT_INS:
        return BUILT_INS[name], None
    prefix, sep, option = name.partition(":")
    if sep and prefix in WITH_OPTION and option:
        return WITH_OPTION[prefix], option
    raise InfluenceLabError(
        f"{key} has '{name}'; allowed values are {shown(custom)}, "
        "or a label of attribution.custom_methods."
    )


def missing_need(cls: type[Attributor], settings, model_cls) -> str | None:
    """The first need of `cls` that the model class or settings cannot meet, in words."""
    for need in cls.traits.needs:
        if need.startswith(OUTPUT_PREFIX):
            fn = need[len(OUTPUT_PREFIX) :]
            if fn not in model_cls.output_functions():
                return (
                    f"the model output function '{fn}', which {model_cls.__name__} "
                    f"(model={settings.model.name}) does not declare (it has "
                    f"{', '.join(model_cls.output_functions())})"
                )
        elif need == "images" and model_cls.kind != "image":
            return CAPABILITIES[need] + f", but model={settings.model.name} works on text"
        elif need == "embedders" and not settings.attribution.embedders:
            return CAPABILITIES[need]
    return None


@dataclass(frozen=True)
class Method:
    """A method of a run, looked up once: its label in tables, its class and its option (the part
    after ':' of `latent:<embedder>`). Checked against the model class and the settings when it
    was resolved (`resolved_methods`)."""

    label: str
    cls: type[Attributor]
    option: str | None = None

    def build(self) -> Attributor:
        """A new attributor of this method, to be prepared."""
        return self.cls(self.label, self.option)

    @property
    def tunes_damping(self) -> bool:
        """Whether it scores at a grid of dampings (`protocols.DampingGrid`)."""
        return issubclass(self.cls, DampingGrid)


def checked(settings, model_cls, name: str, key: str) -> Method:
    """The method `name` of the setting `key`, refused in one sentence when it is unknown or its
    needs the model class and settings cannot meet."""
    cls, option = method_class(name, settings.attribution, list(settings.plugins), key)
    missing = missing_need(cls, settings, model_cls)
    if missing:
        raise InfluenceLabError(f"{key} has {name}, which needs {missing}.")
    refusal = cls.check(settings, model_cls, option)
    if refusal:
        raise InfluenceLabError(refusal)
    return Method(name, cls, option)


# what `calibrate` ranks with when calibrate.methods is null: its null runs need only the targets
# and the prompt filter's pools, so the cheapest ranking that works for every data type (pixels,
# characters) will do
NULL_RUN_METHODS = ("raw_only",)


def resolved_methods(settings, model_cls) -> tuple[list[Method], list[Method] | None]:
    """The methods a stage runs, each name looked up and checked once: attribution.methods
    (`auto` = the built-ins marked for it whose needs are met) and lds.methods where the stage has
    an `lds` section, else None (`auto` = the search methods of attribution.methods and the
    gradient built-ins marked for it whose needs are met)."""
    known: dict[str, Method] = {}

    def of(names, key: str) -> list[Method]:
        for name in names:
            if name not in known:
                known[name] = checked(settings, model_cls, name, key)
        return [known[name] for name in names]

    def named_or(named, default: list[str]) -> list[str]:
        if named in (None, "auto"):
            return [
                n
                for n in default
                if n not in BUILT_INS or missing_need(BUILT_INS[n], settings, model_cls) is None
            ]
        return [str(named)] if isinstance(named, str) else [str(m) for m in named]

    att = settings.attribution
    default = [n for n, c in BUILT_INS.items() if "attribute" in c.traits.auto]
    attribute = of(named_or(att.methods, default), "attribution.methods")
    if settings.lds is None:
        return attribute, None
    default = [m.label for m in attribute if m.cls.traits.family == "search"]
    default += [n for n, c in BUILT_INS.items() if "lds" in c.traits.auto]
    return attribute, of(named_or(settings.lds.methods, default), "lds.methods")


def methods_named(names: list[str], att, plugins=()) -> list[Method]:
    """Methods by name, for a notebook or a test (a stage resolves and checks its own once, at
    its entry: `resolved_methods`)."""
    return [Method(name, *method_class(name, att, list(plugins))) for name in names]


def spaces(att, methods: list[Method], labelled: bool) -> list[str]:
    """The embedders an attribution with `methods` builds: attribution.embedders (searched) and
    those the methods read besides (the paper scorer's feature space)."""
    return spaces_read(att, labelled, ((m.cls, m.option) for m in methods))
