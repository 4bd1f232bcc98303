"""The run store, at the bottom of the layers so that every component can write its results:
atomic writes and hashed done markers (`files`), safe names and paths (`paths`), and the
signatures that name result directories (`signature`)."""
