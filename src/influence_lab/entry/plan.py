"""What a stage's settings resolve to, once, at its entry: the model class `model._target_`
names, the attribution methods with their classes and options (`auto` expanded, each checked
against the model class and the settings) and whether a method takes a damping grid. (The
embedding spaces depend on whether the data has labels, so the stage reads them from
its methods once the data is loaded: `registry.spaces`.) The stage hands the parts below it; nothing
below looks a name up again (a method's class, the model's class)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InfluenceLabError
from ..settings import StageSettings


@dataclass(frozen=True)
class Plan:
    model_cls: type
    methods: tuple = ()  # registry.Method of attribution.methods, in order
    lds_methods: tuple | None = None  # of lds.methods, where the stage has an lds section

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.methods]

    @property
    def tunes_damping(self) -> bool:
        """Whether a method of attribution.methods scores at a grid of dampings."""
        return any(m.tunes_damping for m in self.methods)


def plan_of(settings: StageSettings) -> Plan:
    """The stage's plan, resolved on the first call for these settings and kept with them (a copy
    made by `settings.replaced` resolves its own)."""
    if settings._plan is None:
        settings._plan = _resolve(settings)
    return settings._plan


def _resolve(settings: StageSettings) -> Plan:
    from ..models.build import model_class

    model_cls = model_class(settings.model.target, "model._target_")  # refused before any work
    if settings.attribution is None:
        return Plan(model_cls)
    from ..attribution.methods import registry

    methods, lds = registry.resolved_methods(settings, model_cls)
    plan = Plan(model_cls, tuple(methods), None if lds is None else tuple(lds))
    _check_pinned(settings, plan)
    return plan


def _check_pinned(settings: StageSettings, plan: Plan) -> None:
    pinned = sorted(settings.attribution.gradient.pinned_dampings or {})
    tuned = [m.label for m in plan.methods if m.tunes_damping]
    wrong = [m for m in pinned if m not in tuned]
    if wrong:
        raise InfluenceLabError(
            f"attribution.gradient.pinned_dampings names {wrong}, which attribution.methods does "
            f"not run as a method that tunes a damping ({', '.join(tuned) or 'none does'})."
        )
