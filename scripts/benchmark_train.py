#!/usr/bin/env python
"""Training-step throughput of the frozen-prefix classifier: how close to the hardware, and what bounds it.

Model only (synthetic images already on the device), per freeze depth:

  (a) fp32, NCHW, eager -- the naive baseline;
  (b) bf16 autocast + channels_last (the frozen prefix under bf16 too: it has no backward);
  (c) (b) + torch.compile of the trainable part (``model.compile``);
  (d) (c) + frozen BatchNorm folded into its convolutions (``model.fold_frozen_bn``).

For each: images/s of full optimizer steps, peak device memory, FLOPs per image counted from the
model (frozen forward + trainable forward and backward, ``torch.utils.flop_counter``), and the
fraction of the device's dense bf16 peak that rate reaches. Then end to end: litdata shards +
SKUDataModule feeding the same step of variant (b), ``augment_on_device`` off and on, as a ratio
to (b) model-only -- input-bound or compute-bound.

On a GPU the defaults are the production path (ResNet152, 224 px, 12,000 SKUs, batch 128). Without
one it runs a tiny configuration (``--tiny``: ResNet10-T, 64 px, a few steps) so every path is
exercised; those CPU figures say nothing about GPUs. Results go to the ``benchmark_train``
section of BENCHMARKS.md (``--no-markdown`` to skip) and ``--json`` prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

import skuvision  # noqa: E402,F401  OMP_WAIT_POLICY before torch

from benchmark_common import machine, publish  # noqa: E402

# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets, SXM parts)
PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L4": 121.0, "A10G": 70.0}
VARIANTS = {
    "a": ("(a) fp32 NCHW eager", dict()),
    "b": ("(b) bf16 + channels_last", dict(channels_last=True, frozen_precision="bf16")),
    "c": ("(c) (b) + compile", dict(channels_last=True, frozen_precision="bf16", compile=True)),
    "d": (
        "(d) (c) + folded frozen BN",
        dict(channels_last=True, frozen_precision="bf16", compile=True, fold_frozen_bn=True),
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tiny", action="store_true", default=not gpu, help="small CPU configuration (default without a GPU)"
    )
    p.add_argument("--backbone", default=None, help="timm backbone (resnet152; tiny: resnet10t)")
    p.add_argument("--image-size", type=int, default=None, help="training crop (224; tiny: 64)")
    p.add_argument("--num-classes", type=int, default=None, help="SKUs in the head (12000; tiny: 50)")
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch (128; tiny: 8)")
    p.add_argument("--depths", default=None, help="freeze depths, comma-separated (0,1,2,3,4,5; tiny: 3,5)")
    p.add_argument("--variants", default=None, help="subset of a,b,c,d (default: all)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (30; tiny: 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (compile happens here) (10; tiny: 1)")
    p.add_argument(
        "--end-to-end",
        dest="end_to_end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also feed the step from shards through SKUDataModule",
    )
    p.add_argument("--workers", type=int, default=None, help="loader workers for the end-to-end run (8; tiny: 2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-markdown", action="store_true", help="do not write BENCHMARKS.md")
    args = p.parse_args(argv)
    tiny = args.tiny
    for key, big, small in (
        ("backbone", "resnet152", "resnet10t"),
        ("image_size", 224, 64),
        ("num_classes", 12000, 50),
        ("batch_size", 128, 8),
        ("depths", "0,1,2,3,4,5", "3,5"),
        ("variants", "a,b,c,d", "a,b,c,d"),
        ("steps", 30, 3),
        ("warmup", 10, 1),
        ("workers", 8, 2),
    ):
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else big)
    args.depths = [int(d) for d in str(args.depths).split(",")]
    args.variants = [v.strip() for v in str(args.variants).split(",")]
    return args


def device_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def build_step(args, depth: int, speed: dict, device: torch.device):
    """(model, step(images, labels)) for one configuration: a full optimizer step, as training runs it."""
    from skuvision.model.module import SKUClassifier

    model = SKUClassifier(
        num_classes=args.num_classes,
        backbone=args.backbone,
        freeze_depth=depth,
        head={"hidden_dims": [512], "dropout": 0.2},
        aux_heads=False,
        **speed,
    ).to(device)
    model.configure_model()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    bf16 = speed.get("frozen_precision") == "bf16"

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return model, step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_image(args, step, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(2, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.num_classes, (2,), device=device)
    with FlopCounterMode(display=False) as counter:
        step(images, labels)
    return counter.get_total_flops() / 2


def time_steps(step, batches, steps: int, warmup: int, device: torch.device) -> float:
    """Images/s over ``steps`` steps after ``warmup`` untimed ones; ``batches`` yields (images, labels)."""
    for _ in range(warmup):
        step(*next(batches))
    sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(batches)
        step(x, y)
        images += x.shape[0]
    sync(device)
    return images / (time.perf_counter() - start)


def synthetic_batches(args, device: torch.device):
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    while True:
        yield images, labels


def shard_batches(args, root: str, device: torch.device, on_device: bool):
    from skuvision.config.data_module import shard_data_module

    dm = shard_data_module(
        root,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=True,
        augment_on_device=on_device,
    )
    dm.setup("fit")
    while True:
        for batch in dm.train_dataloader():
            batch = dm.on_after_batch_transfer({k: v.to(device, non_blocking=True) for k, v in batch.items()}, 0)
            yield batch["image"], batch["label"] % args.num_classes


def make_shards(args, workdir: Path) -> str:
    from skuvision.data.shards import BuildSettings, build_shards
    from skuvision.data.synthetic import write_catalogue

    images = workdir / "images"
    write_catalogue(images, 16, 20 if args.tiny else 64, size=max(2 * args.image_size, 160), seed=5, progress=False)
    out = workdir / "shards"
    build_shards(
        images,
        out,
        BuildSettings(size=max(args.image_size + args.image_size // 7, 64), val=0.1, test=0.1),
        progress=False,
    )
    return str(out)


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = device_peak(device)
    rows = []
    for depth in args.depths:
        for key in args.variants:
            label, speed = VARIANTS[key]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            model, step = build_step(args, depth, speed, device)
            flops = flops_per_image(args, build_step(args, depth, {}, device)[1], device)
            rate = time_steps(step, synthetic_batches(args, device), args.steps, args.warmup, device)
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            rows.append(
                {
                    "depth": depth,
                    "variant": key,
                    "label": label,
                    "img_s": rate,
                    "gflop_per_img": flops / 1e9,
                    "peak_fraction": rate * flops / peak if peak else None,
                    "peak_mem_gib": memory,
                }
            )
            print(f"depth {depth} {label}: {rate:,.1f} img/s", file=sys.stderr)
            del model, step
    e2e = []
    if args.end_to_end:
        depth = 4 if 4 in args.depths else args.depths[-1]
        with tempfile.TemporaryDirectory() as tmp:
            root = make_shards(args, Path(tmp))
            _, step = build_step(args, depth, VARIANTS["b"][1], device)
            model_only = time_steps(step, synthetic_batches(args, device), args.steps, args.warmup, device)
            for on_device in (False, True):
                rate = time_steps(step, shard_batches(args, root, device, on_device), args.steps, args.warmup, device)
                e2e.append(
                    {
                        "depth": depth,
                        "augment_on_device": on_device,
                        "img_s": rate,
                        "model_only_img_s": model_only,
                        "ratio_to_model_only": rate / model_only,
                    }
                )
    base = {(r["depth"]): r["img_s"] for r in rows if r["variant"] == "a"}
    for r in rows:
        r["speedup_vs_a"] = r["img_s"] / base[r["depth"]] if r["depth"] in base else None
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({machine()})",
        "torch": torch.__version__,
        "config": {
            k: getattr(args, k) for k in ("backbone", "image_size", "num_classes", "batch_size", "steps", "tiny")
        },
        "model_only": rows,
        "end_to_end": e2e,
    }


def table(results: dict) -> str:
    c = results["config"]
    lines = [
        "## Training throughput — `scripts/benchmark_train.py`",
        "",
        f"Device: {results['device']}, torch {results['torch']}; {c['backbone']} at {c['image_size']} px, "
        f"{c['num_classes']:,} SKUs, batch {c['batch_size']}, {c['steps']} timed steps"
        + (" (tiny CPU configuration: proves the paths, says nothing about GPUs)" if c["tiny"] else "")
        + ".",
        "",
        "| freeze depth | variant | img/s | × (a) | GFLOP/img | of bf16 peak | peak mem (GiB) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["model_only"]:
        frac = f"{r['peak_fraction']:.1%}" if r["peak_fraction"] is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
        lines.append(
            f"| {r['depth']} | {r['label']} | {r['img_s']:,.1f} | {r['speedup_vs_a']:.2f} | "
            f"{r['gflop_per_img']:.2f} | {frac} | {mem} |"
        )
    if results["end_to_end"]:
        lines += [
            "",
            "End to end (shards + SKUDataModule feeding variant (b)):",
            "",
            "| freeze depth | augment_on_device | img/s | model-only img/s | ratio |",
            "|---:|---|---:|---:|---:|",
        ]
        for r in results["end_to_end"]:
            lines.append(
                f"| {r['depth']} | {r['augment_on_device']} | {r['img_s']:,.1f} | {r['model_only_img_s']:,.1f} | "
                f"{r['ratio_to_model_only']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    return publish("benchmark_train", table(results), results, args)


if __name__ == "__main__":
    sys.exit(main())
