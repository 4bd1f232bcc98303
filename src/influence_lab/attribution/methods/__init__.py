"""Attribution methods as classes behind one interface (`base.Attributor`), the built-ins in the
registry (`registry.BUILT_INS`), a user's own through `attribution.custom_methods`."""

from .attributor import Attributor, ScoreTable, Targets, Traits
from .context import AttributionContext

__all__ = ["Attributor", "AttributionContext", "ScoreTable", "Targets", "Traits"]
