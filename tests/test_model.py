import torch

from skuvision.model.backbone import build_backbone
from skuvision.model.module import SKUClassifier, count_parameters


def test_trainable_parameters_fall_strictly_with_freeze_depth():
    counts = []
    for depth in range(6):
        model = SKUClassifier(num_classes=10, backbone="resnet10t", freeze_depth=depth, head={"hidden_dims": [32]})
        total, trainable = count_parameters(model)
        table = model.parameter_table()
        assert (table["total"], table["trainable"]) == (total, trainable)
        counts.append(trainable)
    assert all(a > b for a, b in zip(counts, counts[1:])), counts
    head_only = sum(
        p.numel() for p in SKUClassifier(10, "resnet10t", freeze_depth=5, head={"hidden_dims": [32]}).head.parameters()
    )
    assert counts[-1] == head_only


def test_resnet152_case_study_architecture_sizes():
    model = SKUClassifier(
        num_classes=12000, backbone="resnet152", freeze_depth=4, head={"hidden_dims": [512]}, aux_heads=False
    )
    table = model.parameter_table()
    assert 64e6 < table["total"] < 68e6
    assert 21e6 < table["trainable"] < 24e6


def test_frozen_prefix_builds_no_graph_and_matches_timm_forward():
    backbone = build_backbone("resnet10t", freeze_depth=3)
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    reference = backbone.model.forward_head(backbone.model.forward_features(x), pre_logits=True)
    assert torch.allclose(backbone(x), reference, atol=1e-5)
    captured = {}
    frozen_last = backbone.frozen_units[-1]
    frozen_last.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    backbone(x).sum().backward()
    assert not captured["out"].requires_grad  # the frozen prefix ran under no_grad
    assert all(p.grad is None for u in backbone.frozen_units for p in u.parameters())


def test_frozen_batchnorm_stays_in_eval_mode_after_train_calls():
    backbone = build_backbone("resnet10t", freeze_depth=2)
    backbone.train()
    frozen_bn = [m for u in backbone.frozen_units for m in u.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    live_bn = [m for m in backbone.model.layer4.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_bn and all(not m.training for m in frozen_bn)
    assert live_bn and all(m.training for m in live_bn)
