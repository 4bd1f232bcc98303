"""Where a pack's training step goes, before and after the pack's own optimisations, one run.

    .venv/bin/python -m benchmarks.pack_step [--models vae ddpm] [--data digits] [--members 32]
        [--epochs 2]

For each model, one pack of `--members` members (each without its own random 5% of the training
set) is built and timed step by step over `--epochs` epochs after one warm-up epoch, split into
batch assembly, forward, backward and optimizer, in three variants, alternated epoch by epoch so
that load on a shared machine hits all alike:
- before: the pack's step before its optimisations, kept here as the baseline: batches assembled
  member by member (`stack_member_by_member`), stacked matrices stored (M, out, in), AdamW written
  as separate tensor operations (`SeparateOpsAdamW`), the solo module's `loss` vmapped;
- vmapped: `training/pack.py` as it is (torch's fused AdamW kernel on every active member's slices,
  matrices stored transposed, batches gathered per column) but still vmapping `loss`;
- after: `training/pack.py` as it is, running the model's member-batched `packed_loss`.
All start from the same parameters and see the same batches and noise; the script prints how far
apart their parameters end (float32 rounding, grown through training) and their mean training
losses over the timed steps. The step's arithmetic is counted with FlopCounterMode and
compared with a large float32 matmul timed in the same run (the practical peak).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import types

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.retrain_throughput import DATA, config, peak_gflops, removal_sets
from influence_lab.data import load_data
from influence_lab.models.build import build_model
from influence_lab.models.protocol import step_generator
from influence_lab.training.pack import MaskedAdamW, Pack

PARTS = ("batch", "forward", "backward", "optimizer")
VARIANTS = ("before", "vmapped", "after")


class SeparateOpsAdamW(MaskedAdamW):
    """The pack's previous optimizer, the baseline: AdamW as separate tensor operations, the rows
    of the active members gathered and scattered back when some sit out."""

    @torch.no_grad()
    def step(self, active: torch.Tensor, lr: float) -> None:
        b1, b2 = self.betas
        self.t += active.float().to(self.t.device)
        t = self.t.clamp(min=1)
        step_size = lr / (1 - b1**t)
        bc2_sqrt = (1 - b2**t).sqrt()
        rows = None if bool(active.all()) else torch.nonzero(active).flatten()
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            shape = (-1,) + (1,) * (p.dim() - 1)
            if rows is None:
                self._update(p.data, m, v, p.grad, step_size.view(shape), bc2_sqrt.view(shape), lr)
                continue
            sub = [p.data[rows], m[rows], v[rows]]
            self._update(
                *sub, p.grad[rows], step_size[rows].view(shape), bc2_sqrt[rows].view(shape), lr
            )
            p.data[rows], m[rows], v[rows] = sub

    def _update(self, p, m, v, g, step_size, bc2_sqrt, lr):
        b1, b2 = self.betas
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
        if self.wd:
            p.mul_(1 - lr * self.wd)
        p.sub_(m / denom * step_size)


def stack_member_by_member(self: Pack, step: int):
    """The pack's previous batch assembly, the baseline: one member at a time, a dict of
    tensors per member, stacked."""
    base = self._base[0]
    batches, noises, weights = [], [], []
    active = torch.zeros(self.members, dtype=torch.bool)
    for m in range(self.members):
        idx = self._member_batch(m, step)
        n = len(idx)
        active[m] = n > 0
        if self.record_seen:
            self.seen[m].update(int(i) for i in idx)
        padded = np.zeros(self.batch_size, dtype=np.int64)
        padded[:n] = idx
        batches.append({k: v[padded] for k, v in self.table.items()})
        w = torch.zeros(self.batch_size)
        w[:n] = 1.0
        weights.append(w)
        noise = (
            base.draw_noise(n, step_generator(self.seeds[m], int(self.member_steps[m])))
            if n
            else {}
        )
        noises.append(noise)
    keys = next((list(nz) for nz in noises if nz), [])
    ref = next((nz for nz in noises if nz), None)
    stacked_noise = {}
    for key in keys:
        rows = []
        for nz in noises:
            full = torch.zeros((self.batch_size, *ref[key].shape[1:]), dtype=ref[key].dtype)
            if nz:
                full[: len(nz[key])] = nz[key]
            rows.append(full)
        stacked_noise[key] = torch.stack(rows).to(self.device)
    stacked_batch = {k: torch.stack([b[k] for b in batches]).to(self.device) for k in batches[0]}
    return stacked_batch, stacked_noise, torch.stack(weights).to(self.device), active


def build(cfg, bundle, members: int, variant: str) -> Pack:
    position = {x: i for i, x in enumerate(bundle.train["id"])}
    removals = removal_sets(list(bundle.train["id"]), members)
    items = [
        np.array(sorted(set(range(len(position))) - {position[i] for i in r})) for r in removals
    ]
    seeds = list(range(1, members + 1))
    models = [build_model(cfg.model, bundle, s) for s in seeds]
    pack = Pack(models, bundle.train, items, seeds, cfg.model.fit.batch_size, 10)
    before = variant == "before"
    if variant != "after":  # the solo module vmapped, not the model's packed_loss
        pack._losses = pack._vmapped_losses
    if before:
        pack._stack = types.MethodType(stack_member_by_member, pack)
        for i, p in enumerate(pack.stacked):
            pack.stacked[i] = nn.Parameter(p.detach().contiguous())
    hp = pack.hp
    pack.opt = (SeparateOpsAdamW if before else MaskedAdamW)(
        list(pack.stacked), members, float(hp.lr), float(hp.weight_decay)
    )
    return pack


def set_epoch(pack: Pack, index: int) -> None:
    """Every member's batch order of epoch `index` (what the pack's on_train_epoch_start does)."""
    for sampler in pack.samplers:
        sampler.set_epoch(index)
    pack._orders = [
        items[list(iter(s))] for s, items in zip(pack.samplers, pack.member_items, strict=True)
    ]


def epoch(pack: Pack, index: int, times: dict | None) -> None:
    set_epoch(pack, index)
    lr = pack.lr_at(index)
    for step in range(pack.steps_per_epoch):
        marks = [time.perf_counter()]
        batch, noise, weight, active = pack._stack(step)
        marks.append(time.perf_counter())
        losses = pack._losses(batch, noise, weight)
        marks.append(time.perf_counter())
        if times is not None:
            times["loss"] += float(losses[active].detach().mean())
        for p in pack.stacked:
            p.grad = None
        losses.masked_fill(~active, 0.0).sum().backward()
        marks.append(time.perf_counter())
        pack.opt.step(active, lr)
        pack.member_steps += active.long()
        marks.append(time.perf_counter())
        if times is not None:
            for part, a, b in zip(PARTS, marks, marks[1:], strict=False):
                times[part] += b - a
            times["steps"] += 1


def step_flops(pack: Pack) -> float:
    set_epoch(pack, 0)
    batch, noise, weight, _ = pack._stack(0)
    with FlopCounterMode(display=False) as counter:
        pack._losses(batch, noise, weight).sum().backward()
    for p in pack.stacked:
        p.grad = None
    return float(counter.get_total_flops())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["vae", "ddpm"])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    args = parser.parse_args()
    peak = peak_gflops()
    print(f"float32 matmul peak here: {peak:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    rows = []
    for model in args.models:
        DATA[model] = args.data
        cfg = config(model, 1.0, tempfile.mkdtemp())
        bundle = load_data(cfg.data)
        packs = {v: build(cfg, bundle, args.members, v) for v in VARIANTS}
        flops = step_flops(packs["vmapped"])
        times = {v: dict.fromkeys((*PARTS, "steps", "loss"), 0.0) for v in packs}
        for pack in packs.values():
            epoch(pack, 0, None)  # warm-up
        for e in range(1, args.epochs + 1):
            for v, pack in packs.items():
                epoch(pack, e, times[v])
        gap = max(
            ((a - b).abs().max() / b.abs().max()).item()
            for other in ("before", "vmapped")
            for a, b in zip(packs[other].stacked, packs["after"].stacked, strict=True)
        )
        for v in packs:
            t = times[v]
            ms = {part: 1000 * t[part] / t["steps"] for part in PARTS}
            total = sum(ms.values())
            rows.append((model, v, ms, total, flops / 1e9 / (total / 1000), t["loss"] / t["steps"]))
        print(
            f"{model}: after {args.epochs + 1} epochs the variants' parameters differ by {gap:.1e} "
            "(max, relative to the largest)"
        )
    print(f"\none step of a {args.members}-member pack on {args.data}, ms (same run):\n")
    print(
        "| model | step | "
        + " | ".join(PARTS)
        + " | total | GFLOP/s | of peak | vs before | vs vmapped | mean training loss |"
    )
    print("|---|---|" + "---|" * (len(PARTS) + 6))
    for model, v, ms, total, gflops, loss in rows:
        base = {r[1]: r[3] for r in rows if r[0] == model}
        cells = " | ".join(f"{ms[p]:.1f}" for p in PARTS)
        print(
            f"| {model} | {v} | {cells} | {total:.1f} | {gflops:.2f} | {100 * gflops / peak:.0f}% "
            f"| {base['before'] / total:.2f}x | {base['vmapped'] / total:.2f}x | {loss:.4g} |"
        )


if __name__ == "__main__":
    main()
