"""One module per CLI stage, each exposing `run(cfg)`. The one-line help of each lives here so
that `influence-lab --help` answers without importing torch; the model and data names it lists
are the config groups' files (conf/model/, conf/data/), read without importing anything."""

from importlib.resources import files


def _choices(group: str) -> str:
    """The names a config group offers, e.g. 'vae|ddpm|...', in a fixed order."""
    names = sorted(p.name[:-5] for p in files("influence_lab.conf").joinpath(group).iterdir()
                   if p.name.endswith(".yaml"))  # fmt: skip
    return "|".join(names)


STAGES = {
    "train": (
        f"fit a generative model (model={_choices('model')}, or your own) on a dataset "
        f"(data={_choices('data')})"
    ),
    "generate": (
        "sample m outputs per prompt with fixed seeds from the trained model (trains it if missing)"
    ),
    "attribute": (
        "rank the training items that influenced each prompt's outputs "
        "(prompt filter, raw and latent search)"
    ),
    "counterfactual": (
        "retrain without each method's top-k and controls (a Hydra multirun of retrain), "
        "compare with statistics"
    ),
    "retrain": (
        "train and measure the members of one job of a counterfactual sweep "
        "(launched by counterfactual)"
    ),
    "featurise": (
        "the gradient methods' training-set features, ahead of attribute and lds; one shard "
        "per job with -m 'shard=range(0,N)' (joblib, SLURM)"
    ),
    "lds": (
        "score every attribution method by the linear datamodeling score on subset-trained models; "
        "memorization"
    ),
    "report": (
        "a self-contained HTML report (and markdown twin) of the results of one model and dataset"
    ),
    "pipeline": "train -> generate -> attribute -> counterfactual, and a short summary",
    "calibrate": (
        "the false-positive rate of a counterfactual design: N null runs (null arms against "
        "their own controls, seeds shifted)"
    ),
    "review": (
        "domain experts grade the attribute run's candidates, blinded, in a local web app "
        "(review [serve | invite NAME | admin | results])"
    ),
}
