import torch
import torchvision

from model.config import FNACConfig
from model.fnac import FNAC, FNACLocalizer, localization_map


def test_official_parameter_names_and_no_extra_state():
    names = set(FNAC().state_dict())
    assert {n.split(".")[0] for n in names} == {"imgnet", "img_proj", "audnet", "aud_proj"}
    tv = {f"imgnet.{k}" for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")}
    assert tv <= names


def test_visual_trunk_is_torchvision_resnet18():
    model = FNAC().eval()
    tv = torchvision.models.resnet18().eval()
    tv.load_state_dict(
        {k: v for k, v in model.imgnet.state_dict().items()}
        | {"fc.weight": tv.fc.weight, "fc.bias": tv.fc.bias}
    )
    tv.avgpool, tv.fc = torch.nn.Identity(), torch.nn.Identity()
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(model.imgnet(x), tv(x).view(2, 512, 7, 7), rtol=1e-5, atol=1e-5)


def test_shapes_heatmap_and_score():
    torch.manual_seed(0)
    model = FNAC().eval()
    image = torch.randint(0, 256, (3, 224, 224, 3), dtype=torch.uint8)
    audio = torch.rand(3, 48000) * 2 - 1
    with torch.no_grad():
        v, a = model(image, audio)
        heatmap, score = FNACLocalizer(model)(image, audio)
    assert v.shape == (3, 512, 7, 7) and a.shape == (3, 512)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3, 7, 7))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    assert heatmap.shape == (3, 7, 7)
    torch.testing.assert_close(heatmap, localization_map(v, a, 0.03))
    torch.testing.assert_close(score, heatmap.flatten(1).max(1).values * 0.03)
    assert (score.abs() <= 1 + 1e-6).all()


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = FNAC()
    bn = torch.cat([m.weight for m in model.audnet.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01 and abs(bn.std().item() - 0.02) < 0.005
    assert model.aud_proj.weight.std().item() < 0.012
    conv = model.audnet.layer4[0].conv1.weight  # kaiming fan_out: std = sqrt(2 / (out · k · k))
    expected = (2.0 / (conv.shape[0] * 9)) ** 0.5
    assert abs(conv.std().item() - expected) / expected < 0.05


def test_small_width_knob():
    config = FNACConfig(width=16, dim=64, image_size=112)
    model = FNAC(config).eval()
    assert config.heatmap_size == 4
    with torch.no_grad():
        heatmap, _ = FNACLocalizer(model)(
            torch.zeros(1, 112, 112, 3, dtype=torch.uint8), torch.zeros(1, 48000)
        )
    assert heatmap.shape == (1, 4, 4)
    assert FNACConfig().heatmap_size == 7 and FNACConfig().n_frames == 200


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = FNAC(FNACConfig(width=8, dim=16, image_size=64))
    image = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    audio = torch.randn(2, 48000) * 0.1
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(image, audio)[0], model(image, audio)[0])
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(image, audio)[0], model(image, audio)[0])
