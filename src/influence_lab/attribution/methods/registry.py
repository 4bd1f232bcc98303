"""The registry: the one place attribution method names live. A built-in is one line of
`BUILT_INS`; `latent:<embedder>` is a method with an option; a user's attributor is a class named
in `attribution.custom_methods` ({label: "module.Class"}) under a module prefix that `plugins`
allows, checked before its module is imported (as model classes are, `models.build`).

`check_methods` refuses, at a stage's entry, every method that is unknown or whose needs the model
class, the data or the settings cannot meet, in one sentence naming the missing capability;
`resolve` gives the methods `auto` stands for; `build` gives prepared-to-be attributors."""

from __future__ import annotations

from ...errors import InfluenceLabError
from ...models.build import allowed_class
from .attributor import CAPABILITIES, OUTPUT_PREFIX, Attributor, Traits, spaces_read
from .gradient import DTrak, TracIn, Trak
from .protocols import DampingGrid
from .search import CaptionOnly, Fused, LatentOnly, LatentSpace, Paper, RawOnly

BUILT_INS: dict[str, type[Attributor]] = {
    "paper": Paper,
    "fused": Fused,
    "caption_only": CaptionOnly,
    "raw_only": RawOnly,
    "latent_only": LatentOnly,
    "tracin": TracIn,
    "trak": Trak,
    "dtrak": DTrak,
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


def check_methods(settings, model_cls, methods: list[str], key: str) -> None:
    """Refuse, in one sentence, a method of `methods` (the setting `key`) that is unknown, or
    whose needs the model class and settings cannot meet."""
    att, plugins = settings.attribution, list(settings.plugins)
    for name in methods:
        cls, option = method_class(name, att, plugins, key)
        missing = missing_need(cls, settings, model_cls)
        if missing:
            raise InfluenceLabError(f"{key} has {name}, which needs {missing}.")
        refusal = cls.check(settings, model_cls, option)
        if refusal:
            raise InfluenceLabError(refusal)


# what `calibrate` ranks with when calibrate.methods is null: its null runs need only the targets
# and the prompt filter's pools, so the cheapest ranking that works for every data type (pixels,
# characters) will do
NULL_RUN_METHODS = ("raw_only",)


def resolve(settings, which: str, model_cls=None) -> list[str]:
    """The methods a stage runs. `which="attribute"`: attribution.methods, `auto` = the built-ins
    marked for it whose needs are met. `which="lds"`: lds.methods, `auto` = the search methods of
    attribution.methods and the gradient built-ins marked for it whose needs are met. Checked
    against `model_cls` (default: the class model._target_ names)."""
    if model_cls is None:
        from ...models.build import model_class

        model_cls = model_class(settings.model.target, "model._target_")
    att = settings.attribution
    if which == "attribute":
        named = att.methods
        default = [n for n, c in BUILT_INS.items() if "attribute" in c.traits.auto]
    else:
        named = settings.lds.methods
        searched = resolve(settings, "attribute", model_cls)
        plugins = list(settings.plugins)
        default = [
            n for n in searched if method_class(n, att, plugins)[0].traits.family == "search"
        ] + [n for n, c in BUILT_INS.items() if "lds" in c.traits.auto]
    if named in (None, "auto"):
        methods = [
            n
            for n in default
            if n not in BUILT_INS or missing_need(BUILT_INS[n], settings, model_cls) is None
        ]
    else:
        methods = [str(named)] if isinstance(named, str) else [str(m) for m in named]
    key = "attribution.methods" if which == "attribute" else "lds.methods"
    check_methods(settings, model_cls, methods, key)
    return methods


def spaces(settings, methods: list[str], labelled: bool) -> list[str]:
    """The embedders an attribution with `methods` builds: attribution.embedders (searched) and
    those the methods read besides (the paper scorer's feature space)."""
    att, plugins = settings.attribution, list(settings.plugins)
    return spaces_read(att, labelled, (method_class(m, att, plugins) for m in methods))


def any_tunes_damping(settings, methods: list[str]) -> bool:
    att, plugins = settings.attribution, list(settings.plugins)
    return any(issubclass(method_class(m, att, plugins)[0], DampingGrid) for m in methods)


def build(name: str, att, plugins=()) -> Attributor:
    """A new attributor for the method `name` of the attribution settings `att` (checked by
    `check_methods` first), a user's class from under `plugins`."""
    cls, option = method_class(name, att, list(plugins))
    return cls(name, option)
