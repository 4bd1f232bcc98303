"""Simulated reviewers for a review study, to try `influence-lab review results` and the report's
experts' section before real experts have graded (and to make the docs' pictures): each simulated
reviewer calls a candidate "clearly influenced" when its caption is the prompt, "partly" when it
names the prompt's subject (its first two words, e.g. "digit zero"), "not influenced" otherwise, and
with probability 1 - accuracy gives one of the other two grades instead. These are NOT expert
judgements; never publish them as such.

    python examples/review_simulated.py [--reviewers 3] [--accuracy 0.85] [overrides ...]

The overrides select the study as `influence-lab review` would (default: the demo's)."""

from __future__ import annotations

import argparse
import random

from influence_lab.entry.stage_entry import compose_stage
from influence_lab.reviewing.access import invite, who
from influence_lab.reviewing.database import default_url, open_database
from influence_lab.reviewing.judgements import progress, record, task_view
from influence_lab.reviewing.study import open_study
from influence_lab.settings import from_config, run_name
from influence_lab.stages.attribute import attribute
from influence_lab.store.paths import output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviewers", type=int, default=3)
    parser.add_argument("--accuracy", type=float, default=0.85)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    settings = from_config(compose_stage("review", overrides))
    run = attribute(settings)
    engine = open_database(settings.review.database or default_url(output_dir(settings)))
    study = open_study(engine, run_name(settings), run.path, run.signature, settings.review.top_k)
    rng = random.Random(args.seed)
    for r in range(args.reviewers):
        name = f"simulated-{r + 1}"
        person = who(engine, study.id, invite(engine, study.id, name))
        for task in progress(engine, study.id, person.id):
            view = task_view(engine, study.id, person.id, task.position)
            topic = " ".join(view["prompt"].split(",")[0].split()[:2])
            grades = {}
            for c in view["candidates"]:
                truth = 2 if c["caption"] == view["prompt"] else int(c["caption"].startswith(topic))
                others = [g for g in (0, 1, 2) if g != truth]
                grade = truth if rng.random() < args.accuracy else rng.choice(others)
                grades[c["id"]] = (grade, "")
            record(engine, person.id, view["task_id"], grades)
        print(f"{name}: graded {sum(t.candidates for t in progress(engine, study.id, person.id))}")


if __name__ == "__main__":
    main()
