"""``python train.py experiment=onboard onboard.from=CKPT data.root=DELTA``: one month's onboarding.

Runs where train.py's task runs (locally, in a ``-m`` sweep, inside a SageMaker job), and leaves
the same run directory: ``checkpoints/last.ckpt`` (loadable by ``load_classifier``, with the
extended label map), ``metrics.json`` and ``per_sku.csv``. No Trainer: the backbone is frozen,
so the work is one forward pass per image and a solve or a few epochs on a feature cache.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import torch

from skuvision.data.datamodule import resolve_root
from skuvision.data.labels import LabelMap
from skuvision.data.lineage import check_label_maps, shard_chain
from skuvision.data.manifest import manifest_hash, read_manifest
from skuvision.data.preprocess import preprocess_spec
from skuvision.data.remote import explain, is_s3, s3_client, split_s3_uri
from skuvision.data.transforms import AugmentConfig, eval_transform, train_transform
from skuvision.errors import ConfigError, DataError
from skuvision.files import atomic_path, write_json
from skuvision.onboarding import heads
from skuvision.onboarding.features import FeatureCache, split_model
from skuvision.onboarding.grow import grown_model, load_checkpoint
from skuvision.onboarding.replay import old_sku_picks, read_picks, split_picks
from skuvision.report.per_sku import write_per_sku_report

log = logging.getLogger(__name__)
STRATEGIES = ("closed_form", "finetune")
SOLVERS = ("mean", "ridge")


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


def _settings(cfg) -> dict:
    ob = dict(cfg.onboard)
    if not ob.get("from"):
        raise ConfigError(
            "onboard.from is required: pass onboard.from=PATH/last.ckpt (local or s3://) of last month's model"
        )
    if ob.get("strategy") not in STRATEGIES:
        raise ConfigError(f"onboard.strategy={ob.get('strategy')}: use {' or '.join(STRATEGIES)}")
    if ob.get("solver", "ridge") not in SOLVERS:
        raise ConfigError(f"onboard.solver={ob.get('solver')}: use {' or '.join(SOLVERS)}")
    for key in ("replay_per_sku", "views", "epochs"):
        if int(ob.get(key, 1)) < (0 if key == "replay_per_sku" else 1):
            raise ConfigError(f"onboard.{key}={ob.get(key)}: must be {'>= 0' if key == 'replay_per_sku' else '>= 1'}")
    return ob


def _transforms(cfg, backbone: str):
    spec = preprocess_spec(backbone, int(cfg.data.image_size))
    augment = AugmentConfig(**dict(cfg.data.get("augment") or {}))
    return eval_transform(spec), train_transform(int(cfg.data.image_size), augment, spec)


def _evaluate(cache: FeatureCache, layer, picks, transform, old_count: int, num_classes: int) -> dict:
    feats, labels = cache.extract(read_picks(picks), transform)
    if not len(labels):
        return {"n": 0}
    with torch.no_grad():
        logits = layer(feats)
    hit = logits.argmax(1) == labels
    top5 = (logits.topk(min(5, num_classes), 1).indices == labels[:, None]).any(1)
    old = labels < old_count
    out = {
        "n": len(labels),
        "top1": float(hit.float().mean()),
        "top5": float(top5.float().mean()),
        "correct": torch.zeros(num_classes, dtype=torch.long).index_add_(0, labels, hit.long()),
        "total": torch.bincount(labels, minlength=num_classes),
    }
    out["top1_old"] = float(hit[old].float().mean()) if old.any() else None
    out["top1_new"] = float(hit[~old].float().mean()) if (~old).any() else None
    return out


def _fit_head(ob: dict, model, old_count, cache, train_new, train_old, eval_tf, train_tf, state: dict) -> dict:
    """Fill the new rows (and, for ridge, re-solve all rows) from the features of new + replay images."""
    _, layer = split_model(model)
    new_classes = list(range(old_count, layer.out_features))
    if ob["strategy"] == "finetune":
        views = int(ob.get("views", 4))
        feats, labels = cache.extract(read_picks(train_new + train_old), train_tf, views=views)
        clean, clean_labels = feats[labels >= old_count], labels[labels >= old_count]
        heads.init_new_rows(layer, old_count, heads.class_means(clean, clean_labels, new_classes))
        layer.requires_grad_(True)
        info = heads.finetune_rows(
            layer,
            old_count,
            feats,
            labels,
            epochs=int(ob.get("epochs", 30)),
            lr=float(ob.get("lr", 0.01)),
            train_old_rows=bool(ob.get("train_old_rows", False)),
            seed=int(ob.get("seed", 0)),
        )
        layer.requires_grad_(False)
        return info
    previous = state.get("ridge")
    # the sums must cover exactly the old classes: a mean/finetune round in between added rows they lack
    use_stats = (
        ob.get("solver", "ridge") == "ridge"
        and previous is not None
        and tuple(previous["cross"].shape) == (layer.in_features + 1, old_count)
    )
    feats, labels = cache.extract(read_picks(train_new if use_stats else train_new + train_old), eval_tf)
    if ob.get("solver", "ridge") == "ridge":
        stats = heads.RidgeStats.from_state(previous) if use_stats else heads.RidgeStats(feats.shape[1])
        stats.add(feats, labels, layer.out_features)
        weight, bias = stats.solve(float(ob.get("ridge", 1.0)))
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        state["ridge"] = stats.state()
        return {"ridge_images": stats.count}
    new = labels >= old_count
    heads.init_new_rows(layer, old_count, heads.class_means(feats[new], labels[new], new_classes))
    return heads.calibrate_new_rows(layer, old_count, feats, labels, float(ob.get("old_tolerance", 0.02)))


def run_onboard(cfg) -> float | None:
    ob = _settings(cfg)
    torch.manual_seed(int(cfg.seed))
    output_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    ckpt_path = fetch_checkpoint(str(ob["from"]), output_dir)
    ckpt = load_checkpoint(ckpt_path)
    delta_root = resolve_root(cfg.data.root)
    delta = read_manifest(delta_root, key="data.root")
    chain = shard_chain(delta_root, delta, ob.get("base"))
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
    model, old_count = grown_model(ckpt, new_map)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trunk, _ = split_model(model)
    cache = FeatureCache(trunk, batch_size=int(cfg.data.get("eval_batch_size") or cfg.data.batch_size), device=device)
    eval_tf, train_tf = _transforms(cfg, model.hparams.backbone)
    replay = int(ob.get("replay_per_sku", 5))
    old_skus = dict(old_map.sku_to_index)
    train_new = split_picks(delta_root, delta, "train")
    train_old = old_sku_picks(chain, old_skus, "train", replay)
    state = dict(ckpt.get("onboarding") or {})
    info = _fit_head(ob, model, old_count, cache, train_new, train_old, eval_tf, train_tf, state)
    onboard_seconds = time.perf_counter() - start
    backbone_images = cache.backbone_images
    log.info(
        "onboarded %d new SKUs onto %d in %.1f s (%d backbone images, %d replay)",
        len(new_skus),
        old_count,
        onboard_seconds,
        backbone_images,
        len(train_old),
    )

    _, layer = split_model(model)
    layer.cpu()
    eval_cache = FeatureCache(trunk, batch_size=cache.batch_size, device=device)
    val = _evaluate(
        eval_cache,
        layer,
        split_picks(delta_root, delta, "val") + old_sku_picks(chain, old_skus, "val", replay),
        eval_tf,
        old_count,
        len(new_map),
    )
    test = _evaluate(
        eval_cache,
        layer,
        split_picks(delta_root, delta, "test") + old_sku_picks(chain, old_skus, "test", None),
        eval_tf,
        old_count,
        len(new_map),
    )
    model.cpu()
    rounds = int(state.get("rounds", 0)) + 1
    state.update(
        rounds=rounds,
        strategy=ob["strategy"],
        solver=ob.get("solver", "ridge"),
        image_size=int(cfg.data.image_size),
        shards=str(delta_root),
        manifest_sha256=manifest_hash(delta),
    )

    hparams = dict(model.hparams)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": hparams,
        "label_map": new_map.to_dict(),
        "preprocess": preprocess_spec(model.hparams.backbone, int(cfg.data.image_size)),  # travels with the weights
        "onboarding": state,
        "epoch": 0,
        "global_step": 0,
    }
    ckpt_out = output_dir / "checkpoints" / "last.ckpt"
    with atomic_path(ckpt_out) as tmp:
        torch.save(checkpoint, tmp)
    metrics = {
        "test/top1": test.get("top1"),
        "test/top5": test.get("top5"),
        "test/top1_old": test.get("top1_old"),
        "test/top1_new": test.get("top1_new"),
        "test/images": test["n"],
        "val/top1": val.get("top1"),
        "val/top1_old": val.get("top1_old"),
        "val/top1_new": val.get("top1_new"),
        "onboard/seconds": onboard_seconds,
        "onboard/backbone_images": backbone_images,
        "onboard/replay_images": len(train_old),
        "onboard/new_images": len(train_new),
        "onboard/old_skus": old_count,
        "onboard/new_skus": len(new_skus),
        "onboard/rounds": rounds,
        "onboard/strategy": ob["strategy"],
        "onboard/solver": ob.get("solver", "ridge"),
        "onboard/eval_backbone_images": eval_cache.backbone_images,
        "num_classes": len(new_map),
        "best_checkpoint": str(ckpt_out),
        "onboard/from": str(ob["from"]),
        **{f"onboard/{k}": v for k, v in info.items()},
    }
    if test["n"]:
        write_per_sku_with_new(output_dir / "per_sku.csv", test, new_map, set(new_skus), write_per_sku_report)
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
