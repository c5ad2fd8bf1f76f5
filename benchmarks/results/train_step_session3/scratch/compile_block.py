import time, torch, sys, os
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1); torch.manual_seed(0)
from monai_patcher.networks.blocks import TransformerBlock
mode = sys.argv[1]
blk = TransformerBlock(32, 1, sr_ratio=2, drop_path_rate=0.05).train()
x = torch.randn(512, 576, 32, requires_grad=True)
g = torch.randn(512, 576, 32)
parts = sys.argv[2] if len(sys.argv) > 2 else "block"
if mode == "compiled":
    if parts == "block":
        fn = torch.compile(blk, dynamic=False)
    else:  # compile the pieces around attention only
        blk.norm1 = torch.compile(blk.norm1, dynamic=False)
        blk.ffn = torch.compile(blk.ffn, dynamic=False)
        fn = blk
else:
    fn = blk
t0 = time.time()
fn(x, 24, 24).backward(g)
print(mode, parts, "first call", round(time.time() - t0, 1), "s", flush=True)
ts = []
for r in range(5):
    t0 = time.process_time(); y = fn(x, 24, 24); t1 = time.process_time(); y.backward(g); t2 = time.process_time()
    ts.append((t1 - t0, t2 - t1))
print(mode, parts, "fwd", [round(a * 1e3) for a, _ in ts], "bwd", [round(b * 1e3) for _, b in ts], flush=True)
if mode == "compiled":
    from torch.profiler import profile
    with profile() as prof:
        fn(x, 24, 24).backward(g)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
