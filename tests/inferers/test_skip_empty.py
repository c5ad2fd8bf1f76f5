"""SkipEmptySliceInferer: the SliceInferer result, with all-background windows answered by one network output."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SliceInferer

from monai_patcher.inferers import SkipEmptySliceInferer
from monai_patcher.networks import patcher_preset


class _Counting(torch.nn.Module):
    """A network that counts the windows it is given (and a non-zero answer to an empty window: its bias)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.net(x)


def _volume(shape=(1, 2, 40, 36, 9), full=(2, 3, 6), half=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    vol = torch.zeros(shape)
    for z in full:  # slices with tissue
        vol[..., z] = torch.randn(shape[:-1], generator=g)
    if half is not None:  # a half-empty slice: a window there may be empty, or partly empty (then it runs)
        vol[:, :, : shape[2] // 2, :, half] = 0
    return vol


@pytest.mark.parametrize("roi, overlap", [((40, 36), 0.0), ((24, 24), 0.5), ((64, 64), 0.25)])
def test_same_result_as_slice_inferer_with_fewer_windows(roi, overlap):
    """Tiled (24 < slice), one window (40 x 36) and padded (64 > slice): the result of MONAI's SliceInferer, with the
    empty windows run once instead of once each."""
    torch.manual_seed(0)
    net = _Counting(torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)))
    vol = _volume()
    kw = dict(roi_size=roi, sw_batch_size=4, overlap=overlap, mode="gaussian")
    with torch.no_grad():
        ref = SliceInferer(spatial_dim=2, **kw)(vol, net)
        all_windows, net.seen = net.seen, 0
        inferer = SkipEmptySliceInferer(spatial_dim=2, **kw)
        out = inferer(vol, net)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert inferer.num_windows == all_windows
    empty_slices = 9 - 3
    windows_per_slice = all_windows // 9
    # every window of an empty slice is skipped but one (the one that gives the shared answer)
    assert inferer.num_skipped >= empty_slices * windows_per_slice - 1
    assert net.seen == all_windows - inferer.num_skipped


def test_patcher_with_gating_outputs_and_switch_off():
    """A tuple output (logits, gating) of the real network: both are shared; ``skip_empty=False`` runs every window."""
    torch.manual_seed(0)
    net = patcher_preset("tiny", in_channels=2, out_channels=1, return_gating=True).eval()
    vol = _volume(shape=(1, 2, 32, 32, 5), full=(1, 3), half=None)
    kw = dict(roi_size=(32, 32), sw_batch_size=2, mode="gaussian")
    with torch.no_grad():
        ref = SliceInferer(spatial_dim=2, **kw)(vol, net)
        skip = SkipEmptySliceInferer(spatial_dim=2, **kw)
        out = skip(vol, net)
        off = SkipEmptySliceInferer(spatial_dim=2, skip_empty=False, **kw)
        out_off = off(vol, net)
    assert isinstance(out, tuple) and len(out) == 2
    for a, b, c in zip(out, ref, out_off):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c, b, rtol=0, atol=0)
    assert (skip.num_windows, skip.num_skipped) == (5, 2)  # slices 0, 2, 4 empty: one runs, two are shared
    assert off.num_skipped == 0


def test_all_empty_volume_runs_one_window():
    net = _Counting(torch.nn.Conv2d(2, 1, 1))  # bias: an empty window's answer is not 0
    inferer = SkipEmptySliceInferer(spatial_dim=2, roi_size=(16, 16), sw_batch_size=3)
    with torch.no_grad():
        out = inferer(torch.zeros(1, 2, 16, 16, 7), net)
    assert net.seen == 1 and inferer.num_skipped == 6
    torch.testing.assert_close(out, net.net(torch.zeros(1, 2, 16, 16)).unsqueeze(-1).expand(1, 1, 16, 16, 7))


def test_tiling_equals_one_window_where_the_window_covers_the_slice():
    """With a window that covers the slice the inferer is the network on each slice; tiling the same slices with
    smaller, overlapping Gaussian-weighted windows gives that result again for a network whose output at a pixel
    depends on that pixel only (so every window agrees where they overlap: the blending itself adds nothing)."""
    torch.manual_seed(0)
    vol = _volume(shape=(1, 2, 40, 36, 5), full=(1, 2, 4), half=None)
    pointwise = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 1), torch.nn.GELU(), torch.nn.Conv2d(8, 1, 1))
    patcher = patcher_preset("tiny", in_channels=2, out_channels=1).eval()
    with torch.no_grad():
        per_slice = torch.stack([patcher(vol[..., z]) for z in range(5)], dim=-1)
        covering = SkipEmptySliceInferer(spatial_dim=2, roi_size=(40, 36), sw_batch_size=3, mode="gaussian")
        torch.testing.assert_close(covering(vol, patcher), per_slice, rtol=1e-5, atol=1e-5)
        one = covering(vol, pointwise)
        tiled = SkipEmptySliceInferer(spatial_dim=2, roi_size=(16, 16), sw_batch_size=7, overlap=0.5, mode="gaussian")
        out = tiled(vol, pointwise)
    assert tiled.num_windows == 5 * 4 * 4  # 40 and 36 pixels in 16-pixel windows at stride 8: 4 x 4 per slice
    torch.testing.assert_close(out, one, rtol=1e-5, atol=1e-6)
