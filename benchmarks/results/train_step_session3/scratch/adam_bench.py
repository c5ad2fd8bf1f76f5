import time, torch, sys
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1)
from monai_patcher.networks import patcher_preset
net = patcher_preset("paper", in_channels=3, out_channels=1)
params = [p for p in net.parameters()]
print(sum(p.numel() for p in params) / 1e6, "M params")
for p in params: p.grad = torch.randn_like(p) * 1e-3
opts = {k: torch.optim.Adam(params, lr=1e-4, **kw) for k, kw in
        {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}.items()}
for r in range(4):
    for k, o in opts.items():
        t0 = time.process_time(); o.step(); t1 = time.process_time()
        print(r, k, f"{(t1-t0)*1e3:.0f} ms", flush=True)
