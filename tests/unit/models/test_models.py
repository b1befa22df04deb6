import pytest
import torch

from afl.errors import ConfigError
from afl.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize(
    ("name", "channels", "side", "expected"),
    [
        ("cnn", 1, 28, 19_146),  # the paper's MNIST CNN
        ("lenet", 1, 28, 61_706),
        ("lenet", 3, 32, 83_126),
        ("resnet20", 3, 32, 272_474),  # the paper's CIFAR ResNet (about 272k)
        ("resnet14", 1, 28, 174_970),  # the authors' later MNIST / Fashion-MNIST ResNet
    ],
)
def test_parameter_counts(name: str, channels: int, side: int, expected: int) -> None:
    model = build_model(name, in_channels=channels, num_classes=10, image_size=side)
    assert count_parameters(model) == expected
    out = model(torch.zeros(3, channels, side, side))
    assert out.shape == (3, 10)


def test_cnn_structure_matches_the_paper() -> None:
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=28)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(32, (3, 3), (1, 1))] * 3
    assert isinstance(model.features[-2], torch.nn.AdaptiveAvgPool2d)


def test_resnet20_has_projection_shortcuts_and_nine_blocks() -> None:
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    assert len(model.blocks) == 9
    projections = [b for b in model.blocks if isinstance(b.shortcut, torch.nn.Sequential)]
    assert [p.shortcut[0].kernel_size for p in projections] == [(1, 1), (1, 1)]
    assert [b.conv1.out_channels for b in model.blocks] == [16] * 3 + [32] * 3 + [64] * 3


def test_resnet14_is_the_later_codes_two_blocks_per_stage_on_one_channel() -> None:
    model = build_model("resnet14", in_channels=1, num_classes=10, image_size=28)
    assert model.stem[0].in_channels == 1 and model.stem[0].out_channels == 16
    assert [b.conv1.out_channels for b in model.blocks] == [16] * 2 + [32] * 2 + [64] * 2
    assert [b.conv1.stride for b in model.blocks] == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 1 + 2 * 6 + 2  # + projections


def test_classes_and_channels_come_from_the_data() -> None:
    model = build_model("cnn", in_channels=3, num_classes=7, image_size=8)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 7)


def test_lenet_rejects_too_small_inputs() -> None:
    with pytest.raises(ValueError, match="at least 12"):
        build_model("lenet", in_channels=1, num_classes=10, image_size=8)


def test_unknown_model_lists_the_allowed_names() -> None:
    allowed = "cnn, lenet, resnet14, resnet20"
    with pytest.raises(ConfigError, match=f"model.name: unknown model 'vgg'; allowed: {allowed}"):
        build_model("vgg", in_channels=1, num_classes=10, image_size=28)
    assert sorted(MODELS) == ["cnn", "lenet", "resnet14", "resnet20"]
