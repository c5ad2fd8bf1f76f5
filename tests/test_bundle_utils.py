"""monai_patcher.bundle_utils: the helpers only the bundles need (insert_after), and PatcherWithGating."""


import pytest
import torch
from monai.transforms import CopyItemsd, EnsureChannelFirstd, Orientationd

from monai_patcher.bundle_utils import insert_after


def test_insert_after_by_class_name():
    first, second = EnsureChannelFirstd(keys="image"), Orientationd(keys="image", axcodes="RAS")
    copy = CopyItemsd(keys="label", names="scan_label")
    out = insert_after([first, second], "EnsureChannelFirstd", copy)
    assert out == [first, copy, second]
    assert insert_after([first, second], "Orientationd", copy, copy) == [first, second, copy, copy]


def test_insert_after_missing_class_names_what_is_there():
    with pytest.raises(ValueError, match=r"no CheckGeometryd in the transforms \(EnsureChannelFirstd\)"):
        insert_after([EnsureChannelFirstd(keys="image")], "CheckGeometryd", CopyItemsd(keys="a", names="b"))


# ------------------------------------------------------------------------------------------ PatcherWithGating


def _upsampled_gating(gating, stride: int, h: int, w: int):
    """The wrapper's documented mapping, built here on its own: every gating pixel covers a ``stride x stride``
    block of the input, so upsample (bilinear, ``align_corners=False``) to ``stride * size`` and crop to ``h x w``."""
    import torch.nn.functional as F

    gh, gw = gating.shape[-2:]
    up = F.interpolate(gating, size=(stride * gh, stride * gw), mode="bilinear", align_corners=False)
    return up[..., :h, :w]


class _KnownGating(torch.nn.Module):
    """A stand-in with ``return_gating``: logits and gating maps (``ceil(H/2) x ceil(W/2)``, as a Patcher with a
    first stride of 2) that are known and far from left-right (or up-down) symmetric, whatever any initialisation."""

    return_gating = False

    def forward(self, x):
        h, w = x.shape[-2:]
        gh, gw = -(-h // 2), -(-w // 2)
        yy, xx = torch.meshgrid(torch.linspace(0, 3, gh), torch.linspace(0, 5, gw), indexing="ij")
        scores = torch.stack([xx, -xx, yy, xx * yy / 5]).expand(x.shape[0], 4, gh, gw)
        logits = 2.0 * x[:, :1] - 1.0
        return (logits, scores.softmax(1)) if self.return_gating else logits


@pytest.fixture
def tiny_patcher():
    from monai_patcher.networks import patcher_preset

    torch.manual_seed(0)
    return patcher_preset("tiny", in_channels=2, out_channels=1).eval()


def test_patcher_with_gating_prediction_is_the_network_output(tiny_patcher):
    from monai_patcher.bundle_utils import PatcherWithGating

    x = torch.randn(2, 2, 33, 47, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tiny_patcher(x)
        out = PatcherWithGating(tiny_patcher)(x)
    assert set(out) == {"pred", "gating"}
    torch.testing.assert_close(out["pred"], expected, rtol=1e-5, atol=1e-6)
    assert tiny_patcher.return_gating is False  # switched back on the way out


@pytest.mark.parametrize("size", [(33, 47), (31, 64), (64, 48)])
def test_patcher_with_gating_maps_are_the_patcher_maps_upsampled(tiny_patcher, size):
    """At odd (and even) sizes the gating is the Patcher's own ``ceil(H/S) x ceil(W/S)`` maps, upsampled bilinearly
    by the first stride ``S`` and cropped to ``H x W``: same place, same orientation (a mirrored map fails)."""
    from monai_patcher.bundle_utils import PatcherWithGating

    h, w = size
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(2))
    stride = tiny_patcher.first_stride
    tiny_patcher.return_gating = True
    with torch.no_grad():
        _, maps = tiny_patcher(x)
    tiny_patcher.return_gating = False
    assert maps.shape[-2:] == (-(-h // stride), -(-w // stride))
    with torch.no_grad():
        gating = PatcherWithGating(tiny_patcher)(x)["gating"]
    assert gating.shape == (1, maps.shape[1], h, w)
    torch.testing.assert_close(gating, _upsampled_gating(maps, stride, h, w), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gating.sum(1), torch.ones(1, h, w), rtol=0, atol=1e-5)  # still a mixture


def test_patcher_with_gating_maps_known_gating_at_odd_size():
    """The same with gating maps that are known and asymmetric by construction (independent of any network's
    initialisation): a left-right or up-down mirrored map, or a shift of one pixel, is far off."""
    from monai_patcher.bundle_utils import PatcherWithGating

    net = _KnownGating()
    x = torch.rand(2, 2, 21, 35)
    out = PatcherWithGating(net)(x)
    net.return_gating = True
    _, maps = net(x)
    net.return_gating = False
    expected = _upsampled_gating(maps, 2, 21, 35)
    torch.testing.assert_close(out["pred"], 2.0 * x[:, :1] - 1.0)
    torch.testing.assert_close(out["gating"], expected, rtol=1e-6, atol=1e-6)
    for wrong in (expected.flip(-1), expected.flip(-2), expected.roll(1, -1)):
        assert (wrong - expected).abs().max() > 0.05  # the reference itself tells these apart


@pytest.mark.parametrize("previous", [False, True])
def test_patcher_with_gating_restores_return_gating_after_an_error(tiny_patcher, previous):
    from monai_patcher.bundle_utils import PatcherWithGating

    tiny_patcher.return_gating = previous
    wrapper = PatcherWithGating(tiny_patcher)
    with pytest.raises(ValueError, match="input channels"):
        wrapper(torch.zeros(1, 3, 16, 16))  # a 2-channel Patcher given 3 channels raises inside forward
    assert tiny_patcher.return_gating is previous


def test_patcher_with_gating_refuses_a_network_without_return_gating():
    from monai_patcher.bundle_utils import PatcherWithGating

    with pytest.raises(TypeError, match=r"Conv2d has no `return_gating` attribute: expected a Patcher"):
        PatcherWithGating(torch.nn.Conv2d(2, 1, 3))


@pytest.mark.parametrize("h", [5, 9, 12])
def test_patcher_with_gating_upsamples_by_the_first_stride_at_small_sizes(h):
    """With a first-stage small patch of 4, a 9-pixel side has 3 gating rows; ceil(9 / 3) = 3 is not the stride.
    The maps must be upsampled by the network's own stride (4) and cropped, as at any other size."""
    from monai_patcher.bundle_utils import PatcherWithGating
    from monai_patcher.networks import patcher_preset

    torch.manual_seed(0)
    net = patcher_preset("tiny", in_channels=2, out_channels=1, small_patch=(4, 2, 2, 2)).eval()
    assert net.first_stride == 4
    x = torch.randn(1, 2, h, 13, generator=torch.Generator().manual_seed(3))
    net.return_gating = True
    with torch.no_grad():
        _, maps = net(x)
    net.return_gating = False
    with torch.no_grad():
        gating = PatcherWithGating(net)(x)["gating"]
    torch.testing.assert_close(gating, _upsampled_gating(maps, 4, h, 13), rtol=1e-5, atol=1e-6)
