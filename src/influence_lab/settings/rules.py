"""The shared base of every settings schema, the rules a value can break, and the translation of a
failed validation into the one sentence the bad-input catalogue shows.

A rule is an `Annotated` type whose validator raises `fail(template)`: the template names the
setting as `{key}` (its dotted path, e.g. `model.hidden`), the value as `{value}` (as the user wrote
it: strings quoted, lists as lists, None as null) and says `{is}`: "is" for a setting, "has" for an
entry of a list (`counterfactual.seeds has -1; ...`). `validated(cls, data, prefix)` turns
pydantic's first error into that sentence as an `InfluenceLabError`.

Variants (models, data sources, embedders, loggers) are pydantic unions picked by a discriminator;
their tags are written `<...>` so that the translation can drop them from an error's location.
"""

from __future__ import annotations

import numbers
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import InfluenceLabError

MAX_SEED = 2**32 - 1  # numpy's and Lightning's bound
RULE = "influence_lab"  # the error type of every rule below


# ---------------------------------------------------------------- values as the messages show them


def show(value) -> str:
    """A setting's value as a message shows it: strings quoted, lists as lists, None as null."""
    if hasattr(value, "_get_node"):  # an OmegaConf container
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        value = list(value)
    return str(value)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_list(value) -> bool:
    if hasattr(value, "_get_node"):
        from omegaconf import ListConfig

        return isinstance(value, ListConfig)
    return isinstance(value, (list, tuple))


def join(*parts) -> str:
    return ".".join(str(p) for p in parts if p not in ("", None))


# ---------------------------------------------------------------- rules


def fail(template: str, **ctx) -> NoReturn:
    """Refuse a value with the sentence `template` (see the module's docstring). `field=NAME` names
    a setting below the one being validated (the sentence's key and value are then that setting's);
    `value_of=NAME` takes the value from it but keeps the key."""
    raise PydanticCustomError(RULE, "{template}", {"template": template, **ctx})


def rule(check, template: str) -> BeforeValidator:
    def validate(value):
        if not check(value):
            fail(template)
        return value

    return BeforeValidator(validate)


def after(check, template: str) -> AfterValidator:
    def validate(value):
        if not check(value):
            fail(template)
        return value

    return AfterValidator(validate)


PositiveInt = Annotated[
    int, rule(lambda v: is_int(v) and v >= 1, "{key} {is} {value}; it must be a positive integer.")
]
PositiveIntOrNull = Annotated[
    int | None,
    rule(
        lambda v: v is None or (is_int(v) and v >= 1),
        "{key} {is} {value}; it must be a positive integer or null.",
    ),
]
NonNegativeInt = Annotated[
    int,
    rule(lambda v: is_int(v) and v >= 0, "{key} {is} {value}; it must be a non-negative integer."),
]
NonNegativeIntOrNull = Annotated[
    int | None,
    rule(
        lambda v: v is None or (is_int(v) and v >= 0),
        "{key} {is} {value}; it must be a non-negative integer.",
    ),
]
PositiveNumber = Annotated[
    float,
    rule(lambda v: is_number(v) and v > 0, "{key} {is} {value}; it must be a positive number."),
]
NonNegativeNumber = Annotated[
    float,
    rule(
        lambda v: is_number(v) and v >= 0, "{key} {is} {value}; it must be a non-negative number."
    ),
]
Number = Annotated[float, rule(is_number, "{key} {is} {value}; it must be a number.")]
BelowOne = Annotated[
    float, rule(lambda v: is_number(v) and 0 <= v < 1, "{key} {is} {value}; it must lie in [0, 1).")
]
Bool = Annotated[
    bool, rule(lambda v: isinstance(v, bool), "{key} {is} {value}; it must be true or false.")
]
Seed = Annotated[
    int,
    rule(
        lambda v: is_int(v) and 0 <= v <= MAX_SEED,
        f"{{key}} {{is}} {{value}}; seeds must be integers from 0 to {MAX_SEED}.",
    ),
]


def one_of(allowed, shown: str | None = None) -> BeforeValidator:
    """The value must be one of `allowed` ("allowed values are a, b, c", or the text `shown`)."""
    listed = shown or ", ".join(allowed)
    return rule(
        lambda v: isinstance(v, str) and v in allowed,
        "{key} {is} {value}; allowed values are " + listed + ".",
    )


def a_list(example: str) -> BeforeValidator:
    """The value must be a list ("give a list, e.g. KEY=EXAMPLE")."""
    return rule(is_list, "{key} is {value}; give a list, e.g. {key}=" + example + ".")


def not_empty(what: str) -> AfterValidator:
    """The list must not be empty ("KEY is empty; WHAT")."""
    return after(lambda v: len(v) > 0, "{key} is empty; " + what)


def _once_each(values):
    seen = set()
    for v in values:
        if v in seen:
            fail("{key} has {twice} twice; list each value once.", twice=show(v))
        seen.add(v)
    return values


OnceEach = AfterValidator(_once_each)


def auto_or(listed):
    """`auto` (or null), one name (a list of it) or a list of names, checked as `listed`."""

    def normalise(value):
        if value is None:
            return "auto"
        return [value] if isinstance(value, str) and value != "auto" else value

    pick = Discriminator(lambda v: "<auto>" if v == "auto" else "<list>")
    return Annotated[
        Annotated[Literal["auto"], Tag("<auto>")] | Annotated[listed, Tag("<list>")],
        pick,
        BeforeValidator(normalise),
    ]


SeedList = Annotated[
    list[Seed], a_list("[1, 2, 3]"), not_empty("give at least one training seed."), OnceEach
]


# ---------------------------------------------------------------- the base class


class Settings(BaseModel):
    """A component's settings: every key known (an unknown one is refused with the list of known
    ones), every value checked by its rule."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if isinstance(data, dict) and cls.model_config.get("extra") == "forbid":
            known = [field.alias or name for name, field in cls.model_fields.items()]
            for key in data:
                if key not in known:
                    fail(
                        "{key} is not a setting here; the settings are " + ", ".join(known) + ".",
                        field=str(key),
                    )
        return data

    def plain(self) -> dict:
        """The settings as plain values, keyed as in the config (`_target_` included)."""
        return self.model_dump(by_alias=True)


# ---------------------------------------------------------------- errors as sentences


def sentence(error: dict, prefix: str = "") -> str:
    """One of pydantic's errors as the sentence the catalogue shows."""
    loc = [p for p in error.get("loc", ()) if not (isinstance(p, str) and p.startswith("<"))]
    item = bool(loc) and isinstance(loc[-1], int)
    while loc and isinstance(loc[-1], int):
        loc.pop()
    key = join(prefix, *loc)
    ctx = dict(error.get("ctx") or {})
    value = error.get("input")
    sub = ctx.get("field") or ctx.get("value_of")
    if sub:
        if ctx.get("field"):
            key = join(key, sub)
            item = False
        value = value.get(sub) if isinstance(value, dict) else getattr(value, sub, None)
    if error.get("type") == RULE:
        fields = {k: v for k, v in ctx.items() if k not in ("template", "field", "value_of")}
        return ctx["template"].format(
            **{**fields, "key": key, "is": "has" if item else "is", "value": show(value)}
        )
    if error.get("type") == "missing":
        return f"{key} is not set; give it on the command line, e.g. {key}=VALUE."
    msg = str(error.get("msg", "is not valid"))
    return f"{key} {'has' if item else 'is'} {show(value)}; {msg[:1].lower() + msg[1:]}."


def validated(schema, data: Any, prefix: str = ""):
    """`data` validated as `schema` (a settings class, or a union of them such as ModelSettings); a
    bad value raises one sentence naming it (as an InfluenceLabError). `prefix` is where `data` sits
    in a stage's config (e.g. "model")."""
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate(data)
        return _adapter(schema).validate_python(data)
    except ValidationError as exc:
        raise InfluenceLabError(sentence(exc.errors()[0], prefix)) from None


_ADAPTERS: dict[int, TypeAdapter] = {}


def _adapter(schema) -> TypeAdapter:
    """One TypeAdapter per schema (some schemas, e.g. unions with a discriminator, are not
    hashable)."""
    if id(schema) not in _ADAPTERS:
        _ADAPTERS[id(schema)] = TypeAdapter(schema)
    return _ADAPTERS[id(schema)]
