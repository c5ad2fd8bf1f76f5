import time, torch, torch.nn.functional as F, sys
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1); torch.manual_seed(0)
cl = torch.channels_last
def tm(fn, reps=20):
    fn(); fn()
    t0 = time.process_time()
    for _ in range(reps): fn()
    return (time.process_time() - t0) / reps * 1e3
for (B, C, H, pad) in ((4, 1280, 24, 1), (4, 1280, 18, 0), (16, 512, 24, 1), (64, 256, 24, 1)):
    x = torch.randn(B, C, H, H).to(memory_format=cl)
    w = torch.randn(C, 1, 3, 3).to(memory_format=cl)
    b = torch.zeros(C)
    Ho = H - 2 + 2 * pad
    g = torch.randn(B, C, Ho, Ho).to(memory_format=cl)
    fwd = tm(lambda: F.conv2d(x, w, b, padding=pad, groups=C))
    cb = lambda mask: torch.ops.aten.convolution_backward(g, x, w, [C], [1, 1], [pad, pad], [1, 1], False, [0, 0], C, mask)
    full = tm(lambda: cb([True, True, True]))
    dg = tm(lambda: cb([True, False, False]))
    wg = tm(lambda: cb([False, True, True]))
    flip = tm(lambda: F.conv2d(g, w.flip(2, 3), padding=2 - pad, groups=C))
    # wgrad as 9 taps
    xl = x.permute(0, 2, 3, 1); gl = g.permute(0, 2, 3, 1)
    def taps():
        xp = F.pad(xl, (0, 0, pad, pad, pad, pad)) if pad else xl
        gf = gl.reshape(-1, C)
        return torch.stack([(gf * xp[:, ky:ky + Ho, kx:kx + Ho].reshape(-1, C)).sum(0) for ky in range(3) for kx in range(3)])
    tp = tm(taps, 5)
    print((B, C, H, pad), f"fwd {fwd:.1f} bwd(all) {full:.1f} dgrad {dg:.1f} wgrad+bias {wg:.1f} dgrad-as-fwd {flip:.1f} wgrad-9taps {tp:.1f}", flush=True)
