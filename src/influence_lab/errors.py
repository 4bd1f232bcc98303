"""One exception type for bad input, so stages can turn it into one clear sentence and exit 2."""


class InfluenceLabError(Exception):
    """A setting or input the user can fix. The message is one sentence naming the field and
    what is allowed."""
