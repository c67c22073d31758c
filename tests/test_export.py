"""Export, predict, evaluate (issue 12) on a really trained tiny model and real shard images.

One short training run (resnet10t at 48 px, 1 epoch) in a run-like directory, exported once with
INT8; the tests then check parity, the counter-side files, predict's rows and exit codes, and that
a checkpoint and its export evaluate to the same numbers as the training run's own test.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest

from helpers import FAST_TRAIN, compose_train_cfg, run_cli


@pytest.fixture(scope="session")
def trained_run(tiny_shards, tmp_path_factory):
    """A finished run dir (checkpoints/, metrics.json, per_sku.csv, confusions.csv, .hydra/config.yaml)."""
    from omegaconf import OmegaConf

    from skuvision.train import run

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train_cfg(
        run_dir,
        [f"data.root={tiny_shards}", *FAST_TRAIN, "model.pretrained=false", "trainer.max_epochs=1", "logger=csv"],
    )
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes for a real run
    run(cfg)
    return run_dir


@pytest.fixture(scope="session")
def best_ckpt(trained_run):
    return json.loads((trained_run / "metrics.json").read_text())["best_checkpoint"]


@pytest.fixture(scope="session")
def export_dir(best_ckpt, tiny_shards, tmp_path_factory):
    from skuvision.export.bundle import export_checkpoint

    out = tmp_path_factory.mktemp("export")
    export_checkpoint(best_ckpt, out, int8=True, calibration=str(tiny_shards), force=True)
    return out


@pytest.fixture(scope="session")
def shard_batch(tiny_shards, export_dir):
    """64+ real shard images (every split) through the export's eval transform."""
    import torch

    from skuvision.data.transforms import eval_transform
    from skuvision.export.shard_reader import load_batch

    spec = json.loads((export_dir / "preprocess.json").read_text())
    batches = [load_batch(tiny_shards, s, eval_transform(spec))[0] for s in ("train", "val", "test")]
    return torch.cat(batches)


def test_training_run_writes_confusions_next_to_per_sku(trained_run):
    per_sku = list(csv.DictReader((trained_run / "per_sku.csv").open()))
    confusions = list(csv.DictReader((trained_run / "confusions.csv").open()))
    wrong = sum(int(r["test_images"]) - int(r["correct"]) for r in per_sku)
    assert sum(int(r["count"]) for r in confusions) == wrong  # every misclassified test image, once
    counts = [int(r["count"]) for r in confusions]
    assert counts == sorted(counts, reverse=True)
    for r in confusions:
        assert r["true_sku"] != r["predicted_sku"] and r["same_brand"] == (
            "yes" if r["true_brand"] == r["predicted_brand"] else "no"
        )


def test_confusion_rows_and_plotted_skus_worst_first():
    from skuvision.report.confusions import confusion_pairs, confusion_rows, worst_skus

    label_map = {
        "sku_to_index": {"a1": 0, "a2": 1, "b1": 2, "b2": 3},
        "brands": {"a1": "A", "a2": "A", "b1": "B", "b2": "B"},
    }
    true = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    pred = [1, 1, 2, 0, 1, 1, 2, 0, 3, 3]  # a1: 1/4 right (taken for a2 twice, b1 once); b1: 1/2 (taken for a1)
    pairs = confusion_pairs(true, pred)
    totals = [4, 2, 2, 2]
    rows = confusion_rows(pairs, totals, label_map)
    assert [(r["true_sku"], r["predicted_sku"], r["count"], r["same_brand"]) for r in rows] == [
        ("a1", "a2", 2, "yes"),
        ("b1", "a1", 1, "no"),
        ("a1", "b1", 1, "no"),
    ]  # ties: the larger share first
    assert rows[0]["share_of_true"] == 0.5
    assert worst_skus(pairs, totals, limit=4) == [0, 2, 1]  # a1 (0.25), b1 (0.5), a2 (1.0): least accurate first


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_onnx_fp32_matches_pytorch_on_real_shard_images(batch_size, best_ckpt, export_dir, shard_batch):
    from skuvision.export.runtime import OnnxPredictor, TorchPredictor

    assert len(shard_batch) >= 64
    batch = shard_batch[:batch_size]
    torch_logits = TorchPredictor(best_ckpt).logits(batch)
    onnx_logits = OnnxPredictor(export_dir).logits(batch)
    assert onnx_logits.shape == (batch_size, torch_logits.shape[1])
    assert np.abs(torch_logits - onnx_logits).max() <= 1e-4
    top5 = lambda x: np.argsort(-x, axis=1, kind="stable")[:, :5]  # noqa: E731
    assert (top5(torch_logits) == top5(onnx_logits)).all()


def test_export_dir_holds_what_a_counter_needs(best_ckpt, export_dir, tiny_shards):
    import onnxruntime as ort
    import torch

    from skuvision.data.preprocess import preprocess_spec

    ckpt = torch.load(best_ckpt, map_location="cpu", weights_only=True)
    labels = json.loads((export_dir / "labels.json").read_text())
    lm = ckpt["label_map"]
    assert [c["sku_id"] for c in labels["classes"]] == sorted(lm["sku_to_index"], key=lm["sku_to_index"].get)
    assert all(c["brand"] == lm["brands"][c["sku_id"]] for c in labels["classes"])
    spec = json.loads((export_dir / "preprocess.json").read_text())
    expected = preprocess_spec(ckpt["hyper_parameters"]["backbone"], 48)  # the eval transform's own spec
    assert {k: spec[k] for k in expected} == expected
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(float)", [3, 48, 48])
    assert isinstance(inp.shape[0], str)  # dynamic batch
    logits, probs = session.run(None, {"images": np.zeros((2, 3, 48, 48), np.float32)})
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and logits.shape == (2, labels["num_classes"])
    card = (export_dir / "model_card.md").read_text()
    assert str(tiny_shards / "manifest.json") in card and "sha256" in card and "test/top1" in card


def test_int8_model_is_static_qdq_per_channel_with_measured_agreement(export_dir):
    import onnx

    summary = json.loads((export_dir / "export.json").read_text())["int8"]
    assert 0.0 <= summary["top1_agreement"] <= 1.0 and summary["agreement_split"] == "test"
    graph = onnx.load(str(export_dir / "model.int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    init = {t.name: t for t in graph.initializer}
    weight_scales = [
        init[n.input[1]]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init and len(init[n.input[0]].dims) == 4
    ]
    assert weight_scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales)  # per output channel


def test_dynamo_exporter_matches_pytorch_too(best_ckpt, shard_batch, tmp_path):
    from skuvision.export.onnx_export import dynamo_usable, export_onnx
    from skuvision.export.runtime import TorchPredictor

    if not dynamo_usable():
        pytest.skip("this torch has no usable dynamo ONNX exporter (torch < 2.5): auto uses the legacy one")
    import onnxruntime as ort

    model = TorchPredictor(best_ckpt)
    info = export_onnx(model.model, tmp_path / "model.onnx", 48, exporter="dynamo")
    assert info["exporter"] == "dynamo" and info["opset"] >= 18 and not list(tmp_path.glob("*.data"))  # one file
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        out = session.run(["logits"], {"images": shard_batch[:n].numpy()})[0]
        assert np.abs(out - model.logits(shard_batch[:n])).max() <= 1e-4


@pytest.fixture()
def photo_inputs(tiny_catalogue, tmp_path):
    """A folder of real photos with one truncated JPEG, and a CSV listing two photos and a missing file."""
    folder = tmp_path / "photos" / "aisle3"
    folder.mkdir(parents=True)
    originals = sorted(tiny_catalogue.rglob("*.jpg"))[:3]
    for i, src in enumerate(originals):
        shutil.copyfile(src, folder / f"p{i}.jpg")
    data = originals[0].read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    listing = tmp_path / "listing.csv"
    listing.write_text(f"path,note\nphotos/aisle3/p0.jpg,a\n{originals[1]},b\nphotos/gone.jpg,c\n")
    return tmp_path / "photos", listing


def test_predict_cli_rows_error_rows_and_exit_status_1(export_dir, photo_inputs, tmp_path):
    folder, listing = photo_inputs
    out = tmp_path / "pred.csv"
    result = run_cli(
        "-m", "skuvision.cli", "predict", str(export_dir), str(folder), str(listing), "--topk", "3", "--out", str(out)
    )
    assert result.returncode == 1, result.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 + 3  # 4 files in the folder, 3 rows in the CSV, in order
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert sorted(p.rsplit("/", 1)[-1] for p in errors) == ["broken.jpg", "gone.jpg"]
    assert all(r["path"] in r["error"] for r in rows if r["error"])
    labels = {c["sku_id"]: c["brand"] for c in json.loads((export_dir / "labels.json").read_text())["classes"]}
    for r in rows:
        if not r["error"]:
            probs = [float(r[f"prob_{k}"]) for k in (1, 2, 3)]
            assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
            assert labels[r["sku_1"]] == r["brand_1"]
    assert "predicted 5 of 7 images (2 failed" in result.stdout.strip().splitlines()[-1]


def test_predict_checkpoint_and_export_give_the_same_answers(best_ckpt, export_dir, photo_inputs):
    from skuvision.export.predict import collect_inputs, predict_paths, render
    from skuvision.export.runtime import load_predictor

    paths = collect_inputs([str(photo_inputs[0])])
    by_ckpt = predict_paths(load_predictor(best_ckpt), paths, topk=5, progress=False)
    by_export = predict_paths(load_predictor(export_dir), paths, topk=5, progress=False)
    for a, b in zip(by_ckpt, by_export):
        assert a["error"] == b["error"]
        assert [p["sku_id"] for p in a["predictions"]] == [p["sku_id"] for p in b["predictions"]]
        assert np.allclose(
            [p["probability"] for p in a["predictions"]], [p["probability"] for p in b["predictions"]], atol=1e-5
        )
    doc = json.loads(render(by_export, 5, "json"))
    broken = [r for r in doc if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0]["predictions"] == [] and "truncated" in broken[0]["error"]
    assert all(r["error"] is None and len(r["predictions"]) == 5 for r in doc if r is not broken[0])


@pytest.mark.parametrize(
    "args, expected",
    [
        (["predict", "{export}", "/nonexistent/photo.jpg"], "INPUT /nonexistent/photo.jpg: no such file or directory"),
        (
            ["predict", "/nonexistent/model", "{shards}/manifest.json"],
            "MODEL /nonexistent/model: no such file or directory",
        ),
        (["predict", "{export}", "{shards}"], "INPUT {shards}: no images"),
        (["predict", "{shards}", "{shards}/manifest.json"], "not an export dir (missing model.onnx"),
        (["predict", "{export}", "{shards}/manifest.json", "--int8", "--image-size", "48"], None),
        (["evaluate", "{export}", "{shards}", "--split", "holdout"], "--split holdout:"),
        (["export", "{ckpt}", "--out", "{tmp}/e", "--int8"], "--int8 needs --calibration SHARDS_DIR"),
        (["export", "{ckpt}", "--out", "{export}"], "already holds model.onnx"),
        (["predict", "{export}", "{shards}", "--topk", "0"], "argument --topk: 0 must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, expected, export_dir, tiny_shards, best_ckpt, tmp_path, capsys):
    from skuvision.cli import main

    values = {"export": export_dir, "shards": tiny_shards, "ckpt": best_ckpt, "tmp": tmp_path}
    argv = [a.format(**values) for a in args]
    if expected is None:  # a readable non-image given by name is a row with an error, not a bad argument
        assert main(argv) == 1
        return
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and expected.format(**values) in lines[0], lines


def test_evaluate_checkpoint_and_export_agree_with_the_training_run(
    trained_run, best_ckpt, export_dir, tiny_shards, tmp_path
):
    from skuvision.export.evaluate import evaluate

    by_ckpt, ckpt_dir = evaluate(best_ckpt, str(tiny_shards), out=str(tmp_path / "ckpt"), progress=False)
    by_export, export_out = evaluate(str(export_dir), str(tiny_shards), out=str(tmp_path / "export"), progress=False)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert by_ckpt["test/top1"] == by_export["test/top1"] == pytest.approx(trained["test/top1"], abs=1e-6)
    assert by_ckpt["test/top5"] == by_export["test/top5"] == pytest.approx(trained["test/top5"], abs=1e-6)
    for key in ("test/brand_top1", "test/brand_top5"):  # the synthetic catalogue has brands: the run logs both
        assert by_ckpt[key] == by_export[key] == pytest.approx(trained[key], abs=1e-6)
    assert by_ckpt["per_brand"] == by_export["per_brand"] and by_ckpt["per_brand"]
    assert sum(b["images"] for b in by_ckpt["per_category"].values()) == by_ckpt["images"]
    for name in ("per_sku.csv", "confusions.csv"):
        assert (ckpt_dir / name).read_text() == (export_out / name).read_text()
    assert (ckpt_dir / "confusions.csv").read_text() == (trained_run / "confusions.csv").read_text()
    assert (export_out / "confusions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sagemaker_model_dir_is_an_export_dir(trained_run, tiny_shards, tmp_path):
    from skuvision.entry.sagemaker_job import export_model_artifacts
    from skuvision.export.evaluate import evaluate

    written = export_model_artifacts(trained_run, tmp_path / "model")
    assert {"model.ckpt", "model.onnx", "labels.json", "preprocess.json", "model_card.md"} <= {p.name for p in written}
    metrics, _ = evaluate(str(tmp_path / "model"), str(tiny_shards), out=str(tmp_path / "eval"), progress=False)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test/top1"] == pytest.approx(trained["test/top1"], abs=1e-6)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_predict_reads_phone_photos_upright_as_the_shard_builder_stores_them(tmp_path):
    """A JPEG with an EXIF Orientation tag is read as a person sees it, as `shards build` stored its training twin."""
    from PIL import Image

    from skuvision.export.runtime import read_image

    upright = Image.new("RGB", (60, 90), (200, 30, 30))  # portrait: red top half, blue bottom half
    upright.paste((30, 30, 200), (0, 45, 60, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    photo, plain = tmp_path / "phone.jpg", tmp_path / "plain.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(photo, "JPEG", quality=95, exif=exif)
    upright.save(plain, "JPEG", quality=95)
    image = read_image(photo)
    assert tuple(image.shape) == (3, 90, 60)  # upright portrait, not the sensor's landscape
    assert image[0, 10, 30] > 150 and image[2, 80, 30] > 150  # red on top, blue below
    assert tuple(read_image(plain).shape) == (3, 90, 60)  # no tag: the fast decoder, same layout


def test_a_checkpoint_copied_out_of_its_run_exports_with_the_preprocessing_it_was_tested_with(
    best_ckpt, export_dir, tmp_path
):
    """model.tar.gz, S3, a colleague's laptop: no .hydra/ next to the file, and no --image-size needed."""
    import torch

    from skuvision.export.bundle import export_checkpoint

    stored = torch.load(best_ckpt, map_location="cpu", weights_only=True)["preprocess"]
    from_run = json.loads((export_dir / "preprocess.json").read_text())  # exported next to its .hydra/
    assert from_run.items() >= stored.items()
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copyfile(best_ckpt, alone)
    export_checkpoint(alone, tmp_path / "export", force=True)
    assert json.loads((tmp_path / "export" / "preprocess.json").read_text()) == from_run
    assert stored["crop"] == 48  # FAST_TRAIN's data.image_size
