"""Domain experts judge attributions: a study built from an attribute run (tasks, blinded candidate
pools), a database of judgements (SQLAlchemy: SQLite by default, PostgreSQL by URL), a local web app
for reviewers and an admin, and the analysis of the judgements (agreement between experts, each
method's precision and nDCG against the experts' majority)."""
