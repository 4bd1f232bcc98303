"""Train results (the directory `influence-lab train` makes for a model: signature-named, so any
stage reuses it), and training many models that differ in removal set and seed ("members") as packs,
each saved as the train result `influence-lab train` would make for it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..console import console, track
from ..data import DataBundle, load_data
from ..models.build import build_model, model_class, save_model
from ..settings import StageSettings, run_name
from ..settings.logger import NoLogger
from ..settings.model import SAMPLING_ARGS
from ..store.files import RunDir, atomic_write, claim, write_json, write_text
from ..store.paths import output_dir
from ..store.signature import signature
from .batches import batch_of
from .devices import torch_device
from .fit import NonFiniteLoss, fit, fit_pack


def train_spec(settings: StageSettings, bundle: DataBundle) -> dict:
    """Everything that determines a trained model: data (not the prompts), model (not the settings
    that act only when sampling, `SAMPLING_ARGS`), seed, and the fingerprint of the training items.
    Data and model are hashed as the config gave them (`StageSettings.given`), so that a schema's
    default or coercion never changes a signature."""
    data = settings.given("data")
    data.pop("prompts", None)
    data["exclude_ids"] = sorted(bundle.excluded)
    model = {k: v for k, v in settings.given("model").items() if k not in SAMPLING_ARGS}
    spec = {
        "data": data,
        "model": model,
        "seed": settings.seed,
        "train_fingerprint": bundle.fingerprint,
    }
    # how a model class fits its frozen parts, when it says (a change of it retrains the model)
    frozen_fit = getattr(model_class(settings.model.target, "model._target_"), "frozen_fit", None)
    if frozen_fit:
        spec["frozen_fit"] = frozen_fit
    return spec


def train_run(settings: StageSettings, bundle: DataBundle) -> RunDir:
    return RunDir(
        output_dir(settings),
        "train",
        run_name(settings),
        signature(train_spec(settings, bundle)),
    )


def begin_train_run(run: RunDir, settings: StageSettings, bundle: DataBundle) -> dict:
    """Write what a train result records before fitting: resolved config and data fingerprint."""
    write_text(run / "config.yaml", settings.config_yaml())
    data_info = {
        "fingerprint": bundle.fingerprint,
        "full_fingerprint": bundle.full_fingerprint,
        "n_train": len(bundle.train),
        "n_val": len(bundle.val),
        "excluded": sorted(bundle.excluded),
    }
    write_json(run / "fingerprint.json", data_info)
    return train_spec(settings, bundle)


def training_seed(member: dict) -> int:
    """The seed a member trains with: its `train_seed` where the plan gave one (a counterfactual
    unit's own seed), else its `seed`."""
    seed = member.get("train_seed")
    return int(member["seed"] if seed is None else seed)


def member_settings(base: StageSettings, member: dict) -> StageSettings:
    """The settings a member trains with: the base's without the member's removed items and with
    its seed; never forced, never tracked, no progress bar (a typed copy; the config it records
    changes alike)."""
    return base.replaced(
        {
            "data.exclude_ids": list(member["removed"]),
            "seed": training_seed(member),
            "force": False,
            "logger": NoLogger(),
            "trainer.progress_bar": False,
        }
    )


def member_bundle(bundle: DataBundle, settings: StageSettings) -> DataBundle:
    """The data a member trains on, as `load_data(settings.data)` gives it: made from the full
    bundle by removing the member's items (no source is read again, the fingerprint is hashed from
    the columns the full bundle read once), or loaded when the full bundle itself removes items."""
    if bundle.excluded or not isinstance(settings.data.exclude_ids, (list, tuple)):
        return load_data(settings.data)
    return bundle.without(list(settings.data.exclude_ids))


def train_members(
    base: StageSettings,
    bundle,
    members: list[dict],
    pack_dir: Path,
    track_ids: list[str] | None = None,
    failures: dict | None = None,
) -> dict:
    """Each member's train result (signature-named, as `influence-lab train` would make it),
    training the missing ones together as one pack. With `track_ids`, each new member also gets
    `dynamics.parquet`: the measured loss of those training items after every epoch.

    A member whose loss stops being finite is left out of the result: its message goes into
    `failures` (member id -> message) when given, else NonFiniteLoss is raised naming it. The pack
    is claimed (file lock) so two processes never train the same members at once."""
    runs, bundles = {}, {}  # one bundle per removal set (members that differ by seed share it)
    for member in members:
        msettings = member_settings(base, member)
        key = tuple(member["removed"])
        if key not in bundles:
            bundles[key] = member_bundle(bundle, msettings)
        mbundle = bundles[key]
        runs[member["member_id"]] = (member, msettings, mbundle, train_run(msettings, mbundle))
    if all(run.done for *_, run in runs.values()):
        return {k: run for k, (*_, run) in runs.items()}
    with claim(Path(f"{pack_dir}.lock"), f"the pack {pack_dir}"):
        missing = [
            entry for entry in runs.values() if not entry[3].done
        ]  # again, now that the pack is ours
        if missing:
            # the checkpoint folder is named by exactly the members it trains, so a pack never
            # resumes from the checkpoint of another set of members
            folder = Path(pack_dir) / signature(sorted(entry[0]["member_id"] for entry in missing))
            failed = (
                _train_pack(base, bundle, missing, folder, track_ids)
                if packs(model_class(base.model.target, "model._target_"), base.trainer)
                else _train_one_by_one(base, bundle, missing)
            )
            for member_id, message in failed.items():
                runs.pop(member_id)
                if failures is None:
                    raise NonFiniteLoss(message)
                failures[member_id] = message
    return {k: run for k, (*_, run) in runs.items()}


def packs(cls, trainer) -> bool:
    """Whether members of model class `cls` train as one pack under these trainer settings: a
    packable class, and on a CPU only one whose pack beats solo fits there (`pack_on_cpu`)."""
    return cls.packable and (cls.pack_on_cpu or torch_device(trainer) != "cpu")


def _train_one_by_one(base: StageSettings, bundle, missing: list[tuple]) -> dict[str, str]:
    """Fit each member alone (models whose pack is slower than solo fits); each fit resumes from
    its own last checkpoint. Training dynamics are not recorded on this path."""
    failed = {}
    console.print(f"training {len(missing)} members one by one", highlight=False)
    for member, msettings, mbundle, run in track(missing, "members"):
        if run.done:  # members with the same removal and seed share one train result
            continue
        # the full data's vocabulary, as a pack
        model = build_model(base.model, bundle, training_seed(member), output_dir(base))
        run.prepare()
        begin_train_run(run, msettings, mbundle)
        try:
            metrics = fit(
                model, mbundle, base.model.fit, msettings.trainer, run.path, training_seed(member)
            )
        except NonFiniteLoss as exc:
            failed[member["member_id"]] = f"member {member['member_id']}: {exc}"
            console.print(f"[red]failed:[/] {failed[member['member_id']]}", highlight=False)
            continue
        save_model(model.eval(), run.path)
        write_json(run / "metrics.json", metrics)
        run.mark_done({"data_fingerprint": mbundle.fingerprint})
    return failed


def _train_pack(
    base: StageSettings, bundle, missing: list[tuple], pack_dir: Path, track_ids
) -> dict[str, str]:
    """Train `missing` (member, settings, bundle, run) as one pack and save each finite member;
    return the failed members' messages."""
    root = output_dir(base)
    models = [build_model(base.model, bundle, training_seed(m), root) for m, *_ in missing]
    position = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
    items = [np.array(sorted(position[i] for i in mb.train["id"])) for _, _, mb, _ in missing]
    console.print(f"training {len(models)} members as one pack", highlight=False)
    start = time.perf_counter()
    track = [position[i] for i in track_ids] if track_ids else None
    pack = fit_pack(
        models,
        bundle.train,
        items,
        [training_seed(m) for m, *_ in missing],
        base.model.fit,
        base.trainer,
        pack_dir,
        track=track,
    )
    seconds = time.perf_counter() - start
    failed = {}
    for m, (model, (member, msettings, mbundle, run)) in enumerate(
        zip(models, missing, strict=True)
    ):
        if m in pack.failed:
            failed[member["member_id"]] = _failure_message(member, pack.failed[m], pack_dir)
            console.print(f"[red]failed:[/] {failed[member['member_id']]}", highlight=False)
            continue
        run.prepare()
        begin_train_run(run, msettings, mbundle)
        save_model(model.eval(), run.path)
        write_json(
            run / "metrics.json",
            {
                "val/loss": _val_loss(model, mbundle),
                "train/loss": model.loss_history[-1],
                "epochs": base.model.fit.max_epochs,
                "steps": len(model.loss_history),
                "trained_in_pack": len(models),
                "fit_seconds": seconds / len(models),
            },
        )
        if track:
            _write_dynamics(run, pack.dynamics, m, track_ids, mbundle)
        run.mark_done({"data_fingerprint": mbundle.fingerprint, "pack": str(pack_dir)})
    return failed


def _failure_message(member: dict, where: dict, pack_dir: Path) -> str:
    """Why a member of a pack has no model: where its training loss stopped being finite."""
    return (
        f"member {member['member_id']} stopped: "
        f"its training loss became {where['loss']} at epoch "
        f"{where['epoch']}, step {where['step']} (pack {pack_dir}); "
        "lower model.lr or check the data."
    )


def _val_loss(model, bundle) -> float:
    """The trained model's mean loss on the validation split (NaN without one)."""
    with torch.no_grad():
        return (
            float(model.example_loss(batch_of(bundle.val), 0).mean())
            if len(bundle.val)
            else float("nan")
        )


def _write_dynamics(run: RunDir, dynamics, m: int, track_ids, bundle) -> None:
    """dynamics.parquet of pack member `m`: the loss of each tracked item per epoch, and whether
    the member trained on it."""
    included = set(bundle.train["id"])
    table = pd.DataFrame(
        [
            {
                "epoch": epoch,
                "id": item_id,
                "included": item_id in included,
                "loss": float(losses[m, j]),
            }
            for epoch, losses in dynamics
            for j, item_id in enumerate(track_ids)
        ]
    )
    atomic_write(run / "dynamics.parquet", lambda p: table.to_parquet(p, index=False))
