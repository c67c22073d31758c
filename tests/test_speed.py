"""Speed paths (model.channels_last, frozen_precision, fold_frozen_bn, compile) give eager's answers on CPU.

Tolerances: layout and folding change only the order of float additions (1e-4 relative); bf16
keeps ~3 significant digits, so the bf16 prefix is held to 3e-2 of the features' scale.
"""

from __future__ import annotations

import pytest
import torch

from skuvision.model.module import SKUClassifier

HEAD = {"hidden_dims": [32], "dropout": 0.0}


def build(backbone: str = "resnet10t", depth: int = 3, **speed) -> SKUClassifier:
    torch.manual_seed(0)
    model = SKUClassifier(num_classes=7, backbone=backbone, freeze_depth=depth, head=HEAD, aux_heads=False, **speed)
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding has something to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def images(n: int = 4, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def same_weights(reference: SKUClassifier, **speed) -> SKUClassifier:
    """A model with the speed path on and exactly the reference's weights (folding happens after loading)."""
    model = build(**{k: v for k, v in speed.items() if k != "fold_frozen_bn"})
    model.load_state_dict(reference.state_dict())
    if speed.get("fold_frozen_bn"):
        model.backbone.fold_frozen_batchnorm()
    if speed.get("channels_last"):
        model.backbone.model.to(memory_format=torch.channels_last)
    return model.eval()


def train_forward_backward(*models: SKUClassifier) -> list[torch.Tensor]:
    """Each model's training-mode outputs on the same images, with the same loss back-propagated."""
    x, outputs = images(), []
    for model in models:
        out = model.train()(x)
        out.square().mean().backward()
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("backbone, depth", [("resnet10t", 3), ("resnet10t", 5), ("efficientnet_lite0", 4)])
def test_folding_frozen_batchnorm_keeps_the_outputs_and_removes_the_pairs(backbone, depth):
    torch.manual_seed(0)
    eager = build(backbone, depth)
    folded = build(backbone, depth)
    folded.load_state_dict(eager.state_dict())
    before = sum(isinstance(m, torch.nn.BatchNorm2d) for u in folded.backbone.frozen_units for m in u.modules())
    count = folded.backbone.fold_frozen_batchnorm()
    after = sum(isinstance(m, torch.nn.BatchNorm2d) for u in folded.backbone.frozen_units for m in u.modules())
    assert count > 0 and after == before - count
    trainable_bn = [
        m for u in folded.backbone.trainable_units for m in u.modules() if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert depth == 5 or trainable_bn  # the trainable stages keep their BatchNorm
    with torch.no_grad():
        want, got = eager(images()), folded.eval()(images())
    assert torch.allclose(want, got, rtol=1e-4, atol=1e-4), (want - got).abs().max()


def test_fold_frozen_bn_config_key_builds_a_folded_model_that_trains():
    def frozen_bn(model) -> int:
        return sum(isinstance(m, torch.nn.BatchNorm2d) for u in model.backbone.frozen_units for m in u.modules())

    plain = SKUClassifier(num_classes=7, backbone="resnet10t", freeze_depth=3, head=HEAD, aux_heads=False)
    model = SKUClassifier(
        num_classes=7, backbone="resnet10t", freeze_depth=3, head=HEAD, aux_heads=False, fold_frozen_bn=True
    )
    assert frozen_bn(model) < frozen_bn(plain) // 2  # (the stem's last BN follows a Sequential, not a conv: kept)
    loss = model(images()).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is None for u in model.backbone.frozen_units for p in u.parameters())
    assert any(p.grad is not None for u in model.backbone.trainable_units for p in u.parameters())


def test_channels_last_gives_the_same_outputs_and_gradients():
    eager = build()
    fast = same_weights(eager, channels_last=True)
    assert fast.backbone.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    out_e, out_f = train_forward_backward(eager, fast)
    assert torch.allclose(out_e, out_f, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), fast.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6), name


def test_bf16_frozen_prefix_runs_in_bf16_and_stays_close():
    eager = build(depth=4)
    fast = same_weights(eager, frozen_precision="bf16")
    dtypes = []
    hook = fast.backbone.frozen_units[-1].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.no_grad():
        want, feats = eager.backbone(images()), fast.backbone(images())
    hook.remove()
    assert dtypes == [torch.bfloat16] and feats.dtype == torch.float32  # the prefix ran in bf16; the rest in fp32
    assert (want - feats).abs().max() <= 3e-2 * want.abs().max()


def test_unknown_frozen_precision_is_one_clear_line():
    from skuvision.errors import ConfigError

    with pytest.raises(ConfigError, match="model.frozen_precision=fp8: use one of fp32, bf16"):
        build(frozen_precision="fp8")


@pytest.mark.slow  # inductor compiles C++ kernels for the CPU: ~1-2 min on 2 cores
def test_compile_of_the_trainable_part_matches_eager_and_keeps_parameter_names():
    eager = build(depth=3)
    fast = same_weights(eager, compile=True)
    fast.configure_model()
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in eager.named_parameters()]
    out_e, out_f = train_forward_backward(eager, fast)
    assert torch.allclose(out_e, out_f, rtol=1e-4, atol=1e-5)
    head_e, head_f = eager.head[0].weight.grad, fast.head[0].weight.grad
    assert torch.allclose(head_e, head_f, rtol=1e-3, atol=1e-6)
