"""Registry-driven: every network builds, has the right output shape, and trains every parameter."""
import pytest
import torch
import torch.nn.functional as F

from memomentum.config import ConfigError
from memomentum.models import INPUT_SHAPES, MODELS, create_model


def test_every_model_has_an_input_shape():
    assert set(INPUT_SHAPES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_gradient_in_every_parameter(name):
    torch.manual_seed(0)
    c, h, w = INPUT_SHAPES[name]
    model = create_model(name, num_classes=7, in_channels=c)
    x = torch.randn(4, c, h, w)
    logits = model(x)
    assert logits.shape == (4, 7)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} gets no gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} gets a zero gradient"


def test_cifar_resnets_follow_the_official_stem_and_depth():
    r18, r34 = create_model("resnet18", 10, 3), create_model("resnet34", 100, 3)
    assert r18.conv1.padding == (0, 0) and r18.conv1.kernel_size == (3, 3)
    assert [len(s) for s in (r34.layer1, r34.layer2, r34.layer3, r34.layer4)] == [3, 4, 6, 3]
    assert sum(p.numel() for p in r18.parameters()) == pytest.approx(11.17e6, rel=0.01)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: digitsnet, lenet, resnet18, resnet34, resnet50"):
        create_model("vgg16", 10, 3)
