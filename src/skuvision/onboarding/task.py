"""``python onboard.py onboard.from=CKPT data.root=DELTA``: one month's onboarding, a task of its own.

Runs wherever train.py's task runs (locally, in a ``-m`` sweep, inside a SageMaker job) and leaves
the same run directory: ``checkpoints/last.ckpt`` (loadable by ``load_classifier``, with the
extended label map), ``metrics.json`` and ``per_sku.csv``. No Trainer: the backbone is frozen,
so the work is one forward pass per image and a solve or a few epochs on a feature cache.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from skuvision.data.datamodule import resolve_root
from skuvision.data.labels import LabelMap
from skuvision.data.lineage import check_label_maps, shard_chain
from skuvision.data.manifest import manifest_hash, read_manifest
from skuvision.data.preprocess import preprocess_spec
from skuvision.data.remote import explain, is_s3, s3_client, split_s3_uri
from skuvision.data.transforms import AugmentConfig, eval_transform, train_transform
from skuvision.errors import ConfigError, DataError
from skuvision.files import atomic_path, write_json
from skuvision.model.ridge import RidgeStats, projection_spec, split_model
from skuvision.onboarding import heads
from skuvision.onboarding.features import FeatureCache
from skuvision.onboarding.grow import grown_model, load_checkpoint
from skuvision.onboarding.replay import Pick, old_sku_picks, read_picks, split_picks
from skuvision.onboarding.settings import OnboardSettings, projection_of, read_settings
from skuvision.quiet import quiet_library_noise
from skuvision.report.per_sku import write_per_sku_report

# Deferred on purpose: boto3/botocore are slow to import and only S3 paths need them.

log = logging.getLogger(__name__)


def fetch_checkpoint(source: str, output_dir: Path) -> str:
    """A local path for ``onboard.from``; an s3:// checkpoint is downloaded once into the run dir."""
    if not is_s3(source):
        return source

    target = output_dir / "onboard_from" / source.rsplit("/", 1)[-1]
    if not target.is_file():
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3_uri(source)
        client = s3_client()
        try:
            client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
                raise DataError(f"onboard.from={source}: no such object; pass last month's checkpoint URI") from None
            raise explain(exc, f"onboard.from={source}", bucket) from None
        except BotoCoreError as exc:
            raise explain(exc, f"onboard.from={source}", bucket) from None
        with atomic_path(target) as tmp:
            client.download_file(bucket, key, str(tmp))
    return str(target)


@dataclass
class Month:
    """Last month's checkpoint and this month's delta, checked against each other."""

    ckpt_path: str
    ckpt: dict
    delta_root: str
    delta: dict
    chain: list  # (root, manifest) of every base shard set, newest first
    old_map: LabelMap
    new_map: LabelMap
    new_skus: list[str]

    def picks(self, split: str, replay_per_sku: int | None) -> tuple[list[Pick], list[Pick]]:
        """(the delta's images of ``split``, at most ``replay_per_sku`` per old SKU from the bases; None: all)."""
        old_skus = dict(self.old_map.sku_to_index)
        return split_picks(self.delta_root, self.delta, split), old_sku_picks(
            self.chain, old_skus, split, replay_per_sku
        )


def load_month(ob: OnboardSettings, data_root: str, output_dir: Path) -> Month:
    """Fetch and read the checkpoint, follow the delta's base chain, refuse label maps that disagree."""
    ckpt_path = fetch_checkpoint(ob.source, output_dir)
    ckpt = load_checkpoint(ckpt_path)
    delta_root = resolve_root(data_root)
    delta = read_manifest(delta_root, key="data.root")
    chain = shard_chain(delta_root, delta, ob.base)
    if not chain:
        raise DataError(
            f"{delta_root}/manifest.json names no base shard set; build the delta with "
            "`skuvision shards build --label-map BASE/manifest.json`"
        )
    old_map, new_map = LabelMap.from_dict(ckpt["label_map"]), LabelMap.from_dict(delta["label_map"])
    new_skus = check_label_maps(
        ckpt_path,
        old_map,
        f"{delta_root}/manifest.json",
        new_map,
        f"{chain[0][0]}/manifest.json",
        LabelMap.from_dict(chain[0][1]["label_map"]),
    )
    return Month(ckpt_path, ckpt, delta_root, delta, chain, old_map, new_map, new_skus)


def checkpoint_preprocess(month: Month, backbone: str, ob: OnboardSettings) -> dict:
    """The preprocessing the model was trained and tested with, as its checkpoint records it."""
    spec = month.ckpt.get("preprocess")
    if spec:
        return dict(spec)
    log.info(
        "%s records no preprocessing (an older checkpoint): onboarding at onboard.fallback_image_size=%d px",
        month.ckpt_path,
        ob.fallback_image_size,
    )
    return preprocess_spec(backbone, ob.fallback_image_size)


def _finetune(ob: OnboardSettings, layer, old_count: int, cache: FeatureCache, train: list[Pick], train_tf) -> dict:
    """New rows start at their class means (from the clean first copies) and are trained on augmented copies."""
    feats, labels = cache.extract(read_picks(train), train_tf, copies=ob.augmented_copies)
    new = labels >= old_count
    new_classes = list(range(old_count, layer.out_features))
    heads.init_new_rows(layer, old_count, heads.class_means(feats[new], labels[new], new_classes))
    layer.requires_grad_(True)
    info = heads.finetune_rows(
        layer,
        old_count,
        feats,
        labels,
        epochs=ob.epochs,
        lr=ob.lr,
        train_old_rows=ob.train_old_rows,
        seed=ob.seed,
    )
    layer.requires_grad_(False)
    return info


def _solve_ridge(ob: OnboardSettings, layer, old_count: int, cache, month: Month, eval_tf, state: dict) -> dict:
    """Re-solve every row from the running sums. Sums that already cover the old classes (from the base
    training run or earlier rounds) get only the new images; otherwise they start from the replay."""
    previous = RidgeStats.from_state(state["ridge"]) if state.get("ridge") else None
    # the sums must be of this trunk's features (same projection) over exactly the old classes: a
    # mean/finetune round in between added rows they lack
    use_stats = previous is not None and previous.covers(layer.in_features, old_count, state.get("projection"))
    train_new, train_old = month.picks("train", ob.replay_per_sku)
    feats, labels = cache.extract(read_picks(train_new if use_stats else train_new + train_old), eval_tf)
    stats = previous if use_stats else RidgeStats(feats.shape[1], projection=state.get("projection"))
    stats.add(feats, labels, layer.out_features)
    penalty, held_out = ob.ridge, {}
    if penalty is None:
        penalty, held_out = _choose_ridge(ob, stats, cache, month, eval_tf)
    weight, bias = stats.solve(penalty)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    state["ridge"] = stats.state()
    return {
        "ridge_images": stats.count,
        "ridge_penalty": penalty,
        "ridge_from_base": bool(use_stats),
        "replay_images": 0 if use_stats else len(train_old),
        **({"ridge_val_top1": held_out} if held_out else {}),
    }


def _choose_ridge(ob: OnboardSettings, stats: RidgeStats, cache, month: Month, eval_tf) -> tuple[float, dict]:
    """The penalty of ``ridge_grid`` with the best top-1 on the held-out val images (delta + replayed old)."""
    val_new, val_old = month.picks("val", ob.replay_per_sku)
    feats, labels = cache.extract(read_picks(val_new + val_old), eval_tf)
    if not len(labels):
        penalty = sorted(ob.ridge_grid)[len(ob.ridge_grid) // 2]
        log.info("no val images to choose onboard.ridge on: using %s, the middle of onboard.ridge_grid", penalty)
        return penalty, {}
    scores = {}
    for penalty in sorted(ob.ridge_grid):
        weight, bias = stats.solve(penalty)
        scores[penalty] = float(hits(partial(F.linear, weight=weight, bias=bias), feats, labels, 1)[0].float().mean())
    best = max(scores, key=lambda p: (scores[p], p))  # ties: the larger penalty, the smoother head
    log.info("onboard.ridge=%s chosen on %d val images (top-1 by penalty: %s)", best, len(labels), scores)
    return best, scores


def _place_class_means(ob: OnboardSettings, layer, old_count: int, cache, train: list[Pick], eval_tf) -> dict:
    """New rows from the new SKUs' mean features, gain and offset calibrated on the training features."""
    feats, labels = cache.extract(read_picks(train), eval_tf)
    new = labels >= old_count
    new_classes = list(range(old_count, layer.out_features))
    heads.init_new_rows(layer, old_count, heads.class_means(feats[new], labels[new], new_classes))
    return heads.calibrate_new_rows(layer, old_count, feats, labels, ob.old_tolerance)


def fit_head(ob: OnboardSettings, model, old_count: int, cache, month: Month, transforms, state: dict) -> dict:
    """Fill the new rows (and, for ridge, re-solve all rows) from the features of new + replay images."""
    _, layer = split_model(model)
    eval_tf, train_tf = transforms
    if ob.strategy == "closed_form" and ob.solver == "ridge":
        return _solve_ridge(ob, layer, old_count, cache, month, eval_tf, state)
    train_new, train_old = month.picks("train", ob.replay_per_sku)
    if ob.strategy == "finetune":
        info = _finetune(ob, layer, old_count, cache, train_new + train_old, train_tf)
    else:
        info = _place_class_means(ob, layer, old_count, cache, train_new + train_old, eval_tf)
    return {**info, "replay_images": len(train_old)}


CHUNK = 1024  # feature rows scored at a time


def hits(layer, feats: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 hit, top-k hit) per image, scored CHUNK rows at a time.

    The whole test split's logits at once are images x classes: with every earlier test image at
    12,000 SKUs, 12,000 x 12,600 float32 = 605 MB, and the top-k as much again.
    """
    top1, topk = [], []
    with torch.no_grad():
        for start in range(0, len(labels), CHUNK):
            logits, y = layer(feats[start : start + CHUNK]), labels[start : start + CHUNK]
            top1.append(logits.argmax(1) == y)
            topk.append((logits.topk(k, 1).indices == y[:, None]).any(1))
    return torch.cat(top1), torch.cat(topk)


def evaluate(cache: FeatureCache, layer, picks: list[Pick], transform, old_count: int, num_classes: int) -> dict:
    """Top-1/top-5 overall, on old and on new SKUs, and per-class counts for per_sku.csv."""
    feats, labels = cache.extract(read_picks(picks), transform)
    if not len(labels):
        return {"n": 0}
    hit, top5 = hits(layer, feats, labels, min(5, num_classes))
    old = labels < old_count
    return {
        "n": len(labels),
        "top1": float(hit.float().mean()),
        "top5": float(top5.float().mean()),
        "correct": torch.zeros(num_classes, dtype=torch.long).index_add_(0, labels, hit.long()),
        "total": torch.bincount(labels, minlength=num_classes),
        "top1_old": float(hit[old].float().mean()) if old.any() else None,
        "top1_new": float(hit[~old].float().mean()) if (~old).any() else None,
    }


def evaluate_splits(model, trunk, cache_batch: int, device, month: Month, ob, eval_tf, old_count: int):
    """(val, test): val with the replay's share of old images, test with every earlier test image."""
    _, layer = split_model(model)
    layer.cpu()
    cache = FeatureCache(trunk, batch_size=cache_batch, device=device)
    val = evaluate(cache, layer, sum(month.picks("val", ob.replay_per_sku), []), eval_tf, old_count, len(month.new_map))
    test = evaluate(cache, layer, sum(month.picks("test", None), []), eval_tf, old_count, len(month.new_map))
    model.cpu()
    return val, test, cache.backbone_images


def save_checkpoint(model, month: Month, preprocess: dict, state: dict, output_dir: Path) -> Path:
    """A checkpoint in train.py's format (weights, hyper-parameters, label map, preprocessing, onboarding state)."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "label_map": month.new_map.to_dict(),
        "preprocess": preprocess,  # travels with the weights
        "onboarding": state,
        "epoch": 0,
        "global_step": 0,
    }
    path = output_dir / "checkpoints" / "last.ckpt"
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def onboarding_metrics(ob, month: Month, val: dict, test: dict, cost: dict, info: dict, state: dict) -> dict:
    return {
        "test/top1": test.get("top1"),
        "test/top5": test.get("top5"),
        "test/top1_old": test.get("top1_old"),
        "test/top1_new": test.get("top1_new"),
        "test/images": test["n"],
        "val/top1": val.get("top1"),
        "val/top1_old": val.get("top1_old"),
        "val/top1_new": val.get("top1_new"),
        **{f"onboard/{k}": v for k, v in cost.items()},
        "onboard/old_skus": len(month.old_map),
        "onboard/new_skus": len(month.new_skus),
        "onboard/rounds": state["rounds"],
        "onboard/strategy": ob.strategy,
        "onboard/solver": ob.solver,
        "num_classes": len(month.new_map),
        "onboard/from": ob.source,
        **{f"onboard/{k}": v for k, v in info.items()},
    }


def run(cfg: DictConfig) -> float | None:
    """Onboard the delta's SKUs onto ``onboard.from``; returns the metric named by ``optimized_metric``."""
    quiet_library_noise()
    ob = read_settings(cfg)
    torch.manual_seed(int(cfg.seed))
    output_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    month = load_month(ob, cfg.data.root, output_dir)
    model, old_count = grown_model(month.ckpt, month.new_map, projection_of(ob))
    if ob.projection and projection_spec(model) != projection_of(ob):
        raise ConfigError(
            f"onboard.projection={ob.projection}: {month.ckpt_path} already projects with {projection_spec(model)}; "
            "keep its settings (or onboard.projection=0), or retrain to change them"
        )
    preprocess = checkpoint_preprocess(month, model.hparams.backbone, ob)
    augment = AugmentConfig(**dict(cfg.data.get("augment") or {}))
    transforms = eval_transform(preprocess), train_transform(int(preprocess["crop"]), augment, preprocess)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trunk, _ = split_model(model)
    cache = FeatureCache(trunk, batch_size=int(cfg.data.batch_size), device=device)
    state = dict(month.ckpt.get("onboarding") or {}, projection=projection_spec(model))
    info = fit_head(ob, model, old_count, cache, month, transforms, state)
    cost = {
        "seconds": time.perf_counter() - start,
        "backbone_images": cache.backbone_images,
        "new_images": len(split_picks(month.delta_root, month.delta, "train")),
    }
    log.info(
        "onboarded %d new SKUs onto %d in %.1f s (%d backbone images)",
        len(month.new_skus),
        old_count,
        cost["seconds"],
        cost["backbone_images"],
    )
    if ob.test:
        val, test, cost["eval_backbone_images"] = evaluate_splits(
            model, trunk, cache.batch_size, device, month, ob, transforms[0], old_count
        )
    else:  # onboard.test=false: the caller evaluates (the whole command is then start-up + onboarding)
        val, test, cost["eval_backbone_images"] = {"n": 0}, {"n": 0}, 0
        model.cpu()
    state.update(
        rounds=int(state.get("rounds", 0)) + 1,
        strategy=ob.strategy,
        solver=ob.solver,
        image_size=int(preprocess["crop"]),
        shards=str(month.delta_root),
        manifest_sha256=manifest_hash(month.delta),
    )
    metrics = onboarding_metrics(ob, month, val, test, cost, info, state)
    metrics["best_checkpoint"] = str(save_checkpoint(model, month, preprocess, state, output_dir))
    if test["n"]:
        write_per_sku_with_new(
            output_dir / "per_sku.csv", test, month.new_map, set(month.new_skus), write_per_sku_report
        )
    write_json(output_dir / "metrics.json", metrics, sort_keys=True, default=str)
    log.info(
        "test top-1 %.4f (old %s, new %s); outputs: %s",
        metrics["test/top1"] or 0,
        metrics["test/top1_old"],
        metrics["test/top1_new"],
        output_dir,
    )
    return metrics.get(cfg.get("optimized_metric") or "test/top1")


def write_per_sku_with_new(path: Path, test: dict, label_map: LabelMap, new: set[str], writer) -> Path:
    """train.py's per_sku.csv plus a ``new`` column (1 for the SKUs this month added)."""
    writer(path, test["correct"], test["total"], label_map.to_dict())
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[0].append("new")
    for row in rows[1:]:
        row.append("1" if row[0] in new else "0")
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path
