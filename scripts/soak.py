#!/usr/bin/env python
"""Soak test: train a small model for many steps and watch the memory of every process.

The real training stack, not a toy loop: the project's Hydra config (``experiment=scratch``,
ResNet10-T from random init at 32 px, a small head) composed as ``python train.py`` composes it,
run through ``skuvision.train.run`` with the default callbacks (best + ``last.ckpt`` checkpoints
every epoch, the summary line, LR monitor, NaN stop, SKU report, progress bar) and loggers (CSV +
W&B offline), on litdata shards of the embedded synthetic catalogue (10 SKUs by default, generated
once under ``--data``), with ``data.num_workers=2`` and persistent loader workers. Epochs are many
and short (175 steps by default); training stops at ``--steps`` (``trainer.max_steps``), then the
usual test of the best checkpoint runs.

One more callback samples the resident set size (RSS, psutil) of the main process and of each
loader worker (the train and val loaders' worker processes, children of the main process) every
``--every`` steps. The first ``--warmup`` fraction of the steps (at least the first epoch) is
warm-up: caches fill, allocators grow their arenas. Growth, per process, is the median of the last
5 samples minus the median of the first 5 after warm-up (the main process swings by ~10 MiB from one
sample to the next; a single spike decides nothing, a leak shows); the soak passes when neither the
main process nor any loader worker grew more than ``--bound-mb`` MiB.

Writes to ``--out`` (default ``logs/soak/<time>``): ``soak.json`` (settings, every sample, the
summary), ``soak_rss.png`` (RSS over steps, main and workers) and the run's own outputs
(checkpoints/, csv/, wandb/, metrics.json). Unless ``--no-markdown``, the ``soak`` section of
BENCHMARKS.md is rewritten and the plot copied to ``docs/soak_rss.png``. The last lines printed
state the result; the exit status is 1 when the bound is exceeded.

Extra arguments are Hydra overrides applied last (e.g. ``logger=csv``, ``data.num_workers=4``,
``data.persistent_workers=false`` to compare).

  python scripts/soak.py                       # 10,000 steps
  python scripts/soak.py --steps 300 --every 20 --no-markdown --out /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("WANDB_MODE", "offline")  # a soak never uploads; `wandb sync` can, later
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import psutil  # noqa: E402

import skuvision  # noqa: E402,F401  OMP_WAIT_POLICY before torch

from benchmark_common import ROOT, machine, write_section  # noqa: E402

MB = 2**20
WINDOW = 5  # samples whose median is "RSS at warm-up" / "RSS at the end"
PNG_DOCS = ROOT / "docs" / "soak_rss.png"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10_000, help="optimizer steps to train (default 10000)")
    p.add_argument("--every", type=int, default=50, help="sample RSS every N steps (default 50)")
    p.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        help="fraction of the steps that is warm-up, not counted in the growth; at least one epoch (default 0.1)",
    )
    p.add_argument("--bound-mb", type=float, default=50.0, help="allowed RSS growth per process, MiB (default 50)")
    p.add_argument("--out", type=Path, default=None, help="output dir (default logs/soak/<time>)")
    p.add_argument(
        "--data", type=Path, default=None, help="shard dir, generated on first use (default data/soak/<settings>)"
    )
    p.add_argument("--skus", type=int, default=10, help="synthetic SKUs (default 10)")
    p.add_argument("--images-per-sku", type=int, default=200, help="synthetic images per SKU (default 200)")
    p.add_argument("--image-size", type=int, default=32, help="training crop, px (default 32; shards at 1.5x)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch (default 8)")
    p.add_argument("--workers", type=int, default=2, help="loader workers per loader, persistent (default 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the main process (default 1: on cores shared with other work, 2 threads "
        "that wait on each other ran ~10x slower; 0 = torch's default)",
    )
    p.add_argument("--no-markdown", action="store_true", help="do not write BENCHMARKS.md / docs/soak_rss.png")
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="no training: re-render the plot, the BENCHMARKS.md section and the verdict from an earlier soak.json",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, applied last")
    args = p.parse_args(argv)
    if args.steps < 1 or args.every < 1 or not 0 <= args.warmup < 1:
        p.error("--steps and --every must be positive and --warmup in [0, 1)")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    args.out = (args.out or ROOT / "logs" / "soak" / stamp).resolve()
    shard_size = args.image_size * 3 // 2
    args.shard_size = shard_size
    args.data = (
        args.data or ROOT / "data" / "soak" / f"{args.skus}x{args.images_per_sku}_{shard_size}px" / "shards"
    ).resolve()
    return args


# -- sampling ------------------------------------------------------------------------------------


def _rss(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / MB
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _loader_worker_pids(loader) -> list[int]:
    """PIDs of a DataLoader's live worker processes (its persistent iterator's, else none)."""
    iterator = getattr(loader, "_iterator", None)
    return [w.pid for w in getattr(iterator, "_workers", []) if w.pid is not None and w.is_alive()]


class RSSSampler(L.Callback):
    """Every ``every`` training steps: the RSS of the main process and of each loader worker.

    Workers are found through the train and val loaders (their persistent iterators' processes)
    and labelled ``train`` / ``val``; any other child process of the main process (W&B's service,
    a worker a loader started without keeping it) is sampled too, labelled ``other``.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.samples: list[dict] = []
        self.epoch_starts: list[int] = []
        self.fit_seconds = 0.0
        self._start = 0.0
        self._main = psutil.Process()
        self.names: dict[str, str] = {}  # pid -> process name, at first sight

    def _roles(self, trainer) -> dict[int, str]:
        roles: dict[int, str] = {}
        loaders = [("train", trainer.train_dataloader)]
        val = trainer.val_dataloaders
        loaders += [("val", v) for v in (val if isinstance(val, list | tuple) else [val])]
        for role, loader in loaders:
            for pid in _loader_worker_pids(loader) if loader is not None else []:
                roles[pid] = role
        return roles

    def sample(self, trainer) -> None:
        roles = self._roles(trainer)
        children = {c.pid: c for c in self._main.children(recursive=True)}
        procs = {}
        for pid, child in sorted(children.items()):
            rss = _rss(child)
            if rss is not None:
                procs[str(pid)] = {"role": roles.get(pid, "other"), "rss_mb": round(rss, 2)}
                if str(pid) not in self.names:
                    try:
                        self.names[str(pid)] = child.name()
                    except psutil.Error:
                        self.names[str(pid)] = "?"
        self.samples.append(
            {
                "step": int(trainer.global_step),
                "epoch": int(trainer.current_epoch),
                "seconds": round(time.perf_counter() - self._start, 3),
                "main_rss_mb": round(_rss(self._main) or 0.0, 2),
                "procs": procs,
            }
        )

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_starts.append(int(trainer.global_step))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0 and (
            not self.samples or self.samples[-1]["step"] != trainer.global_step
        ):
            self.sample(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.fit_seconds = time.perf_counter() - self._start
        if not self.samples or self.samples[-1]["step"] != trainer.global_step:
            self.sample(trainer)


SAMPLERS: list[RSSSampler] = []


def rss_sampler(every: int) -> RSSSampler:
    """The callback's Hydra ``_target_``: keeps the instance where main() finds it after the run."""
    SAMPLERS.append(RSSSampler(every))
    return SAMPLERS[-1]


# -- the run ---------------------------------------------------------------------------------------


def overrides(args) -> list[str]:
    return [
        "experiment=scratch",  # ResNet10-T from random init on the synthetic catalogue
        f"data.synthetic.root={args.data}",
        f"data.synthetic.skus={args.skus}",
        f"data.synthetic.images_per_sku={args.images_per_sku}",
        f"data.synthetic.size={args.shard_size}",
        f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        "data.eval_batch_size=32",
        f"data.num_workers={args.workers}",
        "data.persistent_workers=true",
        "model.head.hidden_dims=[32]",
        "trainer.max_epochs=-1",
        f"++trainer.max_steps={args.steps}",
        "trainer.log_every_n_steps=50",
        f"+callbacks.soak_rss._target_={__name__}.rss_sampler",
        f"+callbacks.soak_rss.every={args.every}",
        *args.overrides,
    ]


def compose_cfg(args):
    """The config ``python train.py <overrides>`` would run, with its outputs in ``args.out``."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from skuvision.config.compose import compose

    cfg = compose(overrides(args), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(args.out)
        del cfg.hydra
    return cfg


def train(args) -> RSSSampler:
    import logging

    import torch

    from skuvision.train import run

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    run(compose_cfg(args))
    if not SAMPLERS or not SAMPLERS[-1].samples:
        raise RuntimeError("the RSS sampler took no sample: was the callback dropped by an override?")
    return SAMPLERS[-1]


# -- summary, plot, report -------------------------------------------------------------------------


def slope_per_1k(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS over steps, MiB per 1,000 steps (a slow leak shows here before the bound)."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return round(1000 * sum((x - mx) * (y - my) for x, y in points) / sxx, 3) if sxx else None


def _head(values: list[float]) -> float:
    return round(statistics.median(values[:WINDOW]), 2)


def _tail(values: list[float]) -> float:
    return round(statistics.median(values[-WINDOW:]), 2)


def _growth(values: list[float]) -> float:
    """Median of the last WINDOW samples minus the median of the first WINDOW after warm-up: one
    allocator spike (the main process swings by ~10 MiB between samples) decides nothing, a leak shows."""
    return round(_tail(values) - _head(values), 2)


def summarise(sampler: RSSSampler, args) -> dict:
    samples = sampler.samples
    first_epoch_end = sampler.epoch_starts[1] if len(sampler.epoch_starts) > 1 else samples[-1]["step"]
    warmup_step = max(int(args.warmup * args.steps), first_epoch_end)
    after = [s for s in samples if s["step"] >= warmup_step] or samples[-1:]
    base, last = after[0], samples[-1]
    main = {
        "warmup_mb": _head([s["main_rss_mb"] for s in after]),
        "end_mb": _tail([s["main_rss_mb"] for s in after]),
        "first_mb": samples[0]["main_rss_mb"],
        "peak_mb": max(s["main_rss_mb"] for s in samples),
        "growth_mb": _growth([s["main_rss_mb"] for s in after]),
        "slope_mb_per_1k_steps": slope_per_1k([(s["step"], s["main_rss_mb"]) for s in after]),
    }
    workers = {}
    for pid in sorted({p for s in samples for p in s["procs"]}, key=int):
        series = [(s["step"], s["procs"][pid]) for s in samples if pid in s["procs"]]
        role = series[-1][1]["role"]
        kept = [(step, p["rss_mb"]) for step, p in series if step >= warmup_step]
        workers[pid] = {
            "role": role,
            "name": sampler.names.get(pid, "?"),
            "first_step": series[0][0],
            "last_step": series[-1][0],
            "samples": len(series),
            "warmup_mb": _head([y for _, y in kept]) if kept else None,
            "end_mb": _tail([y for _, y in kept] or [series[-1][1]["rss_mb"]]),
            "peak_mb": max(p["rss_mb"] for _, p in series),
            # a process that ended before warm-up, or started after it, has no growth to judge
            "growth_mb": _growth([y for _, y in kept]) if len(kept) > 1 else None,
            "slope_mb_per_1k_steps": slope_per_1k(kept),
        }
    loader_workers = {pid: w for pid, w in workers.items() if w["role"] in ("train", "val")}
    pids = {role: sorted(int(p) for p, w in loader_workers.items() if w["role"] == role) for role in ("train", "val")}
    # persistent: the same train workers from the first sample to the last, none replaced
    persisted = len(pids["train"]) == args.workers and all(
        w["first_step"] == samples[0]["step"] and w["last_step"] == last["step"]
        for w in loader_workers.values()
        if w["role"] == "train"
    )
    growths = [main["growth_mb"]] + [w["growth_mb"] for w in loader_workers.values() if w["growth_mb"] is not None]
    steps = last["step"]
    timed = last["seconds"] - base["seconds"]
    return {
        "steps": steps,
        "epochs": len(sampler.epoch_starts),
        "steps_per_epoch": sampler.epoch_starts[1] if len(sampler.epoch_starts) > 1 else steps,
        "warmup_step": base["step"],
        "fit_seconds": round(sampler.fit_seconds, 1),
        "steps_per_sec": round(steps / sampler.fit_seconds, 2) if sampler.fit_seconds else None,
        "steps_per_sec_after_warmup": round((steps - base["step"]) / timed, 2) if timed > 0 else None,
        "main": main,
        "workers": workers,
        "loader_worker_pids": pids,
        "workers_persisted": persisted,
        "max_worker_growth_mb": max((w["growth_mb"] or 0.0 for w in loader_workers.values()), default=None),
        "bound_mb": args.bound_mb,
        "max_growth_mb": max(growths),
        "passed": max(growths) <= args.bound_mb,
    }


def plot(samples: list[dict], summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, delta) = plt.subplots(2, 1, figsize=(9, 7), dpi=110, sharex=True, height_ratios=[3, 2])
    base_step = summary["warmup_step"]
    colours = {"train": "tab:blue", "val": "tab:orange", "other": "tab:gray"}
    lines = [("main process", "black", 1.6, [(s["step"], s["main_rss_mb"]) for s in samples])]
    for pid, w in summary["workers"].items():
        label = f"{w['role']} worker {pid}" if w["role"] != "other" else f"other child {pid} ({w.get('name', '?')})"
        series = [(s["step"], s["procs"][pid]["rss_mb"]) for s in samples if pid in s["procs"]]
        lines.append((label, colours[w["role"]], 1.0, series))
    for label, colour, width, series in lines:
        ax.plot([x for x, _ in series], [y for _, y in series], label=label, color=colour, linewidth=width)
        kept = [(x, y) for x, y in series if x >= base_step]
        if kept:  # the change since warm-up (its median, as the summary takes it): what the bound is about
            base = statistics.median(y for _, y in kept[:WINDOW])
            delta.plot([x for x, _ in kept], [y - base for _, y in kept], color=colour, linewidth=width)
    for axis in (ax, delta):
        axis.axvline(base_step, color="tab:red", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    ax.plot([], [], color="tab:red", linestyle="--", linewidth=0.8, label="end of warm-up")
    delta.axhline(summary["bound_mb"], color="tab:red", linewidth=0.8)
    delta.text(base_step, summary["bound_mb"], f" bound {summary['bound_mb']:.0f} MiB", va="bottom", fontsize=7)
    delta.set_ylim(min(-10.0, delta.get_ylim()[0]), max(summary["bound_mb"] * 1.2, delta.get_ylim()[1]))
    delta.set_xlabel("training step")
    delta.set_ylabel("RSS change since warm-up (MiB)")
    ax.set_ylabel("RSS (MiB)")
    verdict = "PASS" if summary["passed"] else "FAIL"
    ax.set_title(
        f"soak: {summary['steps']:,} steps, growth after warm-up {summary['main']['growth_mb']:+.1f} MiB main, "
        f"max {summary['max_worker_growth_mb'] or 0:+.1f} MiB per worker (bound {summary['bound_mb']:.0f}): {verdict}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    s, a = results["summary"], results["settings"]
    m = s["main"]
    rows = [
        f"| main process | {m['warmup_mb']:,.1f} | {m['end_mb']:,.1f} | {m['growth_mb']:+.1f} | "
        f"{_fmt(m['slope_mb_per_1k_steps'], '+.2f')} | {m['peak_mb']:,.1f} |"
    ]
    for pid, w in s["workers"].items():
        if w["role"] in ("train", "val"):
            rows.append(
                f"| {w['role']} worker (pid {pid}) | {_fmt(w['warmup_mb'], ',.1f')} | {w['end_mb']:,.1f} | "
                f"{_fmt(w['growth_mb'], '+.1f')} | {_fmt(w['slope_mb_per_1k_steps'], '+.2f')} | {w['peak_mb']:,.1f} |"
            )
    verdict = "PASS" if s["passed"] else "FAIL"
    return "\n".join(
        [
            "## Soak — `scripts/soak.py`",
            "",
            f"Command: `{results['command']}`. {results['machine']}; {results['cpu_note']}",
            "",
            f"`experiment=scratch` through `skuvision.train.run` with the default callbacks and loggers (CSV + W&B "
            f"offline; best and `last.ckpt` checkpoints every epoch): ResNet10-T from random init at "
            f"{a['image_size']} px, head [32], {a['skus']} synthetic SKUs ({s['steps_per_epoch']} steps per epoch, "
            f"batch {a['batch_size']}), {a['workers']} persistent workers per loader. {s['steps']:,} steps in "
            f"{s['epochs']} epochs, {s['fit_seconds']:,.0f} s of fit ({s['steps_per_sec']:.1f} steps/s; "
            f"{s['steps_per_sec_after_warmup']:.1f} after warm-up, validation and checkpoints included). "
            f"RSS sampled every {a['every']} steps; warm-up = the first {s['warmup_step']:,} steps; "
            f"torch threads in the main process: {a['threads'] or 'default'}. RSS at warm-up / at the end: median "
            f"of the first / last {WINDOW} samples after warm-up; growth: their difference; trend: least-squares "
            "slope after warm-up. Worker RSS counts the pages shared with the main process (fork) that the "
            "worker has touched.",
            "",
            "| process | RSS at warm-up (MiB) | RSS at end (MiB) | growth (MiB) | trend (MiB / 1k steps) | peak (MiB) |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Largest growth {s['max_growth_mb']:+.1f} MiB against a bound of {s['bound_mb']:.0f} MiB: **{verdict}**. "
            + (
                "The same loader workers (pids) ran from the first sample to the last. "
                if s["workers_persisted"]
                else "Loader workers were replaced during the run (pids changed): not persistent. "
            )
            + "![soak RSS](docs/soak_rss.png)",
        ]
    )


def report(results: dict, out: Path, write_markdown: bool) -> int:
    """soak.json, the plot, BENCHMARKS.md (optional) and the last lines; the exit status."""
    summary = results["summary"]
    (out / "soak.json").write_text(json.dumps(results, indent=1) + "\n")
    png = plot(results["samples"], summary, out / "soak_rss.png")
    if write_markdown:
        PNG_DOCS.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, PNG_DOCS)
        write_section("soak", markdown(results))
    m = summary["main"]
    verdict = "PASS" if summary["passed"] else "FAIL"
    print(
        f"soak: {summary['steps']:,} steps in {summary['fit_seconds']:,.0f} s ({summary['steps_per_sec']} steps/s); "
        f"main RSS {m['warmup_mb']:,.1f} -> {m['end_mb']:,.1f} MiB after warm-up (step {summary['warmup_step']:,}), "
        f"growth {m['growth_mb']:+.1f} MiB; loader workers {summary['loader_worker_pids']}, "
        f"max growth {summary['max_worker_growth_mb'] or 0:+.1f} MiB"
    )
    print(f"soak: outputs in {out} (soak.json, soak_rss.png, checkpoints/, csv/, metrics.json)")
    print(
        f"soak: {verdict}: largest RSS growth {summary['max_growth_mb']:+.1f} MiB "
        f"{'<=' if summary['passed'] else '>'} bound {summary['bound_mb']:.0f} MiB"
    )
    return 0 if summary["passed"] else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:  # re-render an earlier run's plot / section / verdict, no training
        results = json.loads(args.from_json.read_text())
        return report(results, args.from_json.resolve().parent, not args.no_markdown)
    command = "python scripts/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    sampler = train(args)
    results = {
        "command": command.strip(),
        "machine": machine(),
        "cpu_note": f"load average at the end {os.getloadavg()[0]:.1f} over {os.cpu_count()} CPUs",
        "wall_seconds": round(time.perf_counter() - start, 1),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("no_markdown", "from_json")
        },
        "summary": summarise(sampler, args),
        "samples": sampler.samples,
    }
    return report(results, args.out, not args.no_markdown)


if __name__ == "__main__":
    sys.exit(main())
