"""From checkpoint to checkout counter: ONNX export, INT8 quantisation, predict, evaluate, confusions.

A counter runs a compact model on an edge box and needs three files that say everything:
``model.onnx`` (fp32, dynamic batch), ``labels.json`` (class index -> SKU id, brand, category) and
``preprocess.json`` (resize, crop, interpolation, mean/std: the eval transform's own spec).

Modules, one job each: ``onnx_export`` (torch -> ONNX, on torch 2.4 and the newest), ``quantize``
(static INT8, QDQ), ``bundle`` (the export directory) and ``card`` (its model_card.md),
``runtime`` (an export dir or a checkpoint behind one predictor interface, and image decoding),
``shard_reader`` (a split of a shard dir as uint8 images and labels), ``predict``, ``evaluate`` and
``confusions`` (which SKUs are mistaken for which; also written by every training run).
Heavy imports (onnx, onnxruntime) stay inside functions: ``skuvision --help`` and training never load them.
"""
