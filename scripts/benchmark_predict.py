#!/usr/bin/env python
"""Inference speed at the counter: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8 (issue 12).

INT8 comes in both activation types ``skuvision export --int8-activations`` offers: uint8 (U8S8,
the default) and int8 (S8S8).

For each model, on the same images in the same run, with the same number of threads (default 2,
an edge box): batch-1 latency p50/p95 and batch-32 images/s of the model alone (preprocessing
excluded: it is the same code for every backend), plus the INT8 model's top-1 agreement with fp32 on
held-out images. Repetitions interleave the three backends, so a busy machine slows all of them
alike; speeds are reported as ratios against eager PyTorch from this same run.

Models:
  - the quickstart model: the checkpoint of a finished ``python train.py`` run (``--quickstart-run``;
    trained into logs/benchmark_predict/quickstart when not given). INT8 calibration on its shards'
    train split, agreement on their test split.
  - a 224 px model: ``--run DIR``, a finished run (e.g. efficientnet_lite0 fine-tuned on
    GroceryStoreDataset shards; calibration on its shards' train split, agreement on their test
    split); without it, ``--backbone`` (default efficientnet_lite0) at ``--size`` (default 224) px
    from the quickstart recipe with ``model.pretrained=true`` (the embedded ImageNet weights) and a
    randomly initialised SKU head over GroceryStoreDataset's classes, calibrated on its train
    photos, agreement on its test photos (``--photos``, the dataset dir with train.txt/test.txt).
Timing images: the GroceryStoreDataset test photos when present, else the quickstart test shards.
Writes the ``benchmark_predict`` section of BENCHMARKS.md; ``--json`` prints the figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import skuvision  # noqa: E402,F401  before torch: OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads made eager 10x slower here)

from benchmark_common import ROOT, machine, publish  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for PyTorch and ONNX Runtime")
    p.add_argument("--quickstart-run", default=None, help="a finished quickstart run dir (checkpoints/, .hydra/)")
    p.add_argument("--run", default=None, help="a finished run dir for the second model (else a random SKU head)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="second model's backbone (pretrained=true)")
    p.add_argument("--size", type=int, default=224, help="second model's image size")
    p.add_argument(
        "--photos",
        default=str(ROOT / "data" / "external" / "dataset"),
        help="GroceryStoreDataset dir (train.txt, test.txt: 'path, fine_id, coarse_id')",
    )
    p.add_argument("--latency-images", type=int, default=60, help="batch-1 forward passes per backend and repetition")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--agreement-images", type=int, default=500)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-markdown", action="store_true")
    return p.parse_args(argv)


def trained_model(run: Path, args, name: str) -> dict:
    """A finished run's best checkpoint, calibrated on its shards' train split, agreement on their test split."""
    import json

    from skuvision.export.runtime import TorchPredictor
    from skuvision.export.shard_reader import load_batch

    model = TorchPredictor(Path(json.loads((run / "metrics.json").read_text())["best_checkpoint"]), run_dir=run)
    shards = compose_data_root(run)
    held = load_batch(shards, "test", model.transform, limit=args.agreement_images)[0]
    overrides = run / ".hydra" / "overrides.yaml"
    trained_with = " ".join(yaml_list(overrides)) if overrides.is_file() else ""
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((Path(shards) / "manifest.json").read_text())
    data = f"{manifest['num_classes']} SKUs, " + " / ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    return {
        "name": f"{name} ({model.model.hparams['backbone']}, {model.spec['crop']} px, trained)",
        "trained_with": f"`python train.py {trained_with}`".replace(" `", "`"),
        "test_top1": metrics.get("test/top1"),
        "data": data,
        "model": model.model,
        "spec": model.spec,
        "held_out": held,
        "calibration": load_batch(shards, "train", model.transform, limit=args.calibration_images)[0],
        "agreement_on": f"its test shards ({len(held)})",
    }


def yaml_list(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [str(v) for v in OmegaConf.load(path) if not str(v).startswith("hydra.run.dir")]


def quickstart_checkpoint(run_dir: str | None) -> tuple[Path, Path]:
    """(best checkpoint, run dir) of a quickstart run, training one first when none is given."""
    import json

    run = Path(run_dir) if run_dir else ROOT / "logs" / "benchmark_predict" / "quickstart"
    if not (run / "metrics.json").is_file():
        if run_dir:
            sys.exit(f"benchmark_predict: error: --quickstart-run {run}: no metrics.json; pass a finished run dir")
        print(f"training the quickstart model into {run} (2-5 min) ...", file=sys.stderr)
        subprocess.run([sys.executable, "train.py", f"hydra.run.dir={run}", "logger=csv"], cwd=ROOT, check=True)
    return Path(json.loads((run / "metrics.json").read_text())["best_checkpoint"]), run


def photo_list(photos: Path, listing: str, limit: int) -> list[Path]:
    """Paths from a GroceryStoreDataset listing, spread evenly over the file (every class represented)."""
    lines = [line.split(",")[0].strip() for line in (photos / listing).read_text().splitlines() if line.strip()]
    step = max(1, len(lines) // max(1, limit))
    return [photos / p for p in lines[::step][:limit]]


def photo_batch(paths: list[Path], transform):
    import torch

    from skuvision.export.runtime import read_image

    return torch.stack([transform(read_image(p)) for p in paths])


def build_models(args, work: Path) -> list[dict]:
    import torch

    from skuvision.config.compose import compose
    from skuvision.data.labels import LabelMap
    from skuvision.data.preprocess import preprocess_spec
    from skuvision.data.transforms import eval_transform
    from skuvision.model.module import SKUClassifier

    _, run = quickstart_checkpoint(args.quickstart_run)
    models = [trained_model(run, args, "quickstart")]
    photos = Path(args.photos)
    if args.run:
        models.append(trained_model(Path(args.run), args, Path(args.run).name))
    elif (photos / "train.txt").is_file():
        classes = sorted(
            {line.split(",")[1].strip() for line in (photos / "train.txt").read_text().splitlines() if line.strip()},
            key=int,
        )
        cfg = compose([f"model.backbone={args.backbone}", "model.pretrained=true", f"data.image_size={args.size}"])
        model_cfg = {k: v for k, v in cfg.model.items() if k not in ("_target_", "num_classes")}
        labels = LabelMap({f"grocery-{c}": i for i, c in enumerate(classes)})
        torch.manual_seed(0)
        model = SKUClassifier(num_classes=len(classes), label_map=labels.to_dict(), **model_cfg).eval()
        spec = preprocess_spec(args.backbone, args.size)
        transform = eval_transform(spec)
        models.append(
            {
                "name": f"{args.backbone} ({args.size} px, ImageNet weights, random SKU head)",
                "model": model,
                "spec": spec,
                "calibration": photo_batch(photo_list(photos, "train.txt", args.calibration_images), transform),
                "held_out": photo_batch(photo_list(photos, "test.txt", args.agreement_images), transform),
                "agreement_on": f"GroceryStoreDataset test photos ({args.agreement_images})",
            }
        )
    for m in models:  # the timing images: real photos when present
        m["timing"] = (
            photo_batch(photo_list(photos, "test.txt", 32), eval_transform(m["spec"]))
            if (photos / "test.txt").is_file()
            else m["held_out"][:32]
        )
    return models


def compose_data_root(run: Path) -> str:
    from skuvision.export.card import training_data_root

    return training_data_root(run / "checkpoints" / "last.ckpt", run)


def export_both(m: dict, work: Path, threads: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from skuvision.export.onnx_export import export_onnx
    from skuvision.export.quantize import quantize_int8, top1_agreement

    fp32 = work / f"{id(m)}.onnx"
    export_onnx(m["model"], fp32, int(m["spec"]["crop"]))
    files = {"ort_fp32": fp32}
    for act in ("uint8", "int8"):
        files[f"ort_{act}"] = quantize_int8(
            fp32, work / f"{id(m)}.{act}.onnx", m["calibration"].numpy(), activations=act
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # passive, like torch's OpenMP threads
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in files.items()}
    held = m["held_out"].numpy()
    run = lambda s: np.concatenate(
        [s.run(["logits"], {"images": held[i : i + 32]})[0] for i in range(0, len(held), 32)]
    )  # noqa: E731
    reference = run(sessions["ort_fp32"])
    return {
        "sessions": sessions,
        "agreement_images": len(held),
        "agreement": {k: top1_agreement(reference, run(sessions[k])) for k in ("ort_uint8", "ort_int8")},
    }


def time_backends(m: dict, sessions: dict, args) -> dict:
    import torch

    images = m["timing"]
    batch = images[:32] if len(images) >= 32 else images.repeat(32 // len(images) + 1, 1, 1, 1)[:32]
    np_images, np_batch = images.numpy(), batch.numpy()
    runners = {"eager": (lambda x: m["model"](x), lambda: images, lambda: batch)}
    for k, s in sessions.items():
        runners[k] = (lambda x, s=s: s.run(["logits"], {"images": x}), lambda: np_images, lambda: np_batch)
    latencies = {k: [] for k in runners}
    throughput = {k: [] for k in runners}
    with torch.inference_mode():
        for fn, one, many in runners.values():  # warm-up: first calls allocate and pick kernels
            fn(one()[:1]), fn(many())
        for _ in range(args.repeats):
            for name, (fn, one, many) in runners.items():
                xs = one()
                for i in range(args.latency_images):
                    x = xs[i % len(xs)][None]
                    t = time.perf_counter()
                    fn(x)
                    latencies[name].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                fn(many())
                throughput[name].append(32 / (time.perf_counter() - t))
    q = lambda v, p: statistics.quantiles(v, n=100)[p - 1]  # noqa: E731
    return {
        k: {
            "p50_ms": statistics.median(latencies[k]),
            "p95_ms": q(latencies[k], 95),
            "batch32_img_s": statistics.median(throughput[k]),
            "batch32_runs": throughput[k],
        }
        for k in runners
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import os

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    results = {
        "machine": machine(),
        "settings": vars(args),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "load_average_before": os.getloadavg()[0],
        "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="skuvision-bench-") as tmp:
        for m in build_models(args, Path(tmp)):
            exported = export_both(m, Path(tmp), args.threads)
            timing = time_backends(m, exported["sessions"], args)
            results["models"].append(
                {
                    "name": m["name"],
                    "agreement": exported["agreement"],
                    "agreement_on": m["agreement_on"],
                    "timing": timing,
                    "trained_with": m.get("trained_with", ""),
                    "test_top1": m.get("test_top1"),
                    "data": m.get("data", ""),
                }
            )
    results["load_average_after"] = os.getloadavg()[0]
    return publish("benchmark_predict", render(results, argv), results, args)


def render(results: dict, argv) -> str:
    s = results["settings"]
    lines = [
        "## Inference at the counter — `scripts/benchmark_predict.py`",
        "",
        f"`python scripts/benchmark_predict.py {' '.join(sys.argv[1:] if argv is None else argv)}`".replace(" `", "`")
        + f" — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {results['machine']}, torch {results['torch']}, "
        f"onnxruntime {results['onnxruntime']}; {s['threads']} threads for every backend, none spinning while idle "
        f"(OMP_WAIT_POLICY=PASSIVE, ORT allow_spinning=0); load average "
        f"{results['load_average_before']:.1f} → {results['load_average_after']:.1f} (a shared machine: compare ratios "
        f"within a model, not across runs). Model forward only (the eval transform is the same code for all "
        f"backends); batch 1: {s['latency_images']} single images × {s['repeats']} interleaved repetitions; batch 32: "
        f"median of {s['repeats']}. INT8: static QDQ, int8 per-channel weights, uint8 (U8S8, the export default) or "
        f"int8 (S8S8) activations, {s['calibration_images']} calibration images.",
        "",
        "| model | backend | batch-1 p50 ms | batch-1 p95 ms | batch-32 img/s | vs eager (batch 1 / 32) | INT8 vs fp32 | INT8 top-1 agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in results["models"]:
        t = m["timing"]
        for k, label in (
            ("eager", "PyTorch eager"),
            ("ort_fp32", "ONNX Runtime fp32"),
            ("ort_uint8", "ONNX Runtime INT8 (U8S8)"),
            ("ort_int8", "ONNX Runtime INT8 (S8S8)"),
        ):
            vs = f"{t['eager']['p50_ms'] / t[k]['p50_ms']:.2f}× / {t[k]['batch32_img_s'] / t['eager']['batch32_img_s']:.2f}×"
            quantised = k in m["agreement"]
            int8 = (
                f"{t['ort_fp32']['p50_ms'] / t[k]['p50_ms']:.2f}× / {t[k]['batch32_img_s'] / t['ort_fp32']['batch32_img_s']:.2f}×"
                if quantised
                else ""
            )
            agree = f"{m['agreement'][k]:.3f} on {m['agreement_on']}" if quantised else ""
            lines.append(
                f"| {m['name'] if k == 'eager' else ''} | {label} | {t[k]['p50_ms']:.2f} | {t[k]['p95_ms']:.2f} | "
                f"{t[k]['batch32_img_s']:.0f} | {vs} | {int8} | {agree} |"
            )
    lines += [""] + [
        f"- {m['name']}: {m['trained_with']} ({m['data']} images), test top-1 {m['test_top1']:.3f}"
        for m in results["models"]
        if m.get("trained_with")
    ]
    lines += [
        "",
        "Goals (issue 12): ONNX Runtime fp32 ≥ 1.2× eager at batch 1; INT8 ≥ 1.5× ONNX Runtime fp32 with ≥ 99 % "
        "top-1 agreement. Per model (INT8 = the export default, U8S8):",
    ]
    for m in results["models"]:
        t = m["timing"]
        fp32, int8, agree = (
            t["eager"]["p50_ms"] / t["ort_fp32"]["p50_ms"],
            t["ort_fp32"]["p50_ms"] / t["ort_uint8"]["p50_ms"],
            m["agreement"]["ort_uint8"],
        )
        verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
        lines.append(
            f"- {m['name']}: fp32 {fp32:.1f}× eager ({verdict(fp32 >= 1.2)}); INT8 {int8:.1f}× fp32 "
            f"({verdict(int8 >= 1.5)}), agreement {agree:.3f} ({verdict(agree >= 0.99)})"
        )
    if any("random SKU head" in m["name"] for m in results["models"]):
        lines[-1] += " A random SKU head has small logit margins, so its agreement understates a trained head's."

    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
