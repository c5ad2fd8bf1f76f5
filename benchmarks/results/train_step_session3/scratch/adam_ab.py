import sys, time, torch
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1)
from benchmarks.bench_train_step import Workload
w = Workload("patcher_paper", 1, 256)
opts = {"plain": torch.optim.Adam(w.model.parameters(), lr=1e-4), "fused": torch.optim.Adam(w.model.parameters(), lr=1e-4, fused=True)}
res = {k: [] for k in opts}
for r in range(5):
    for k, o in (opts.items() if r % 2 == 0 else reversed(list(opts.items()))):
        w.opt = o
        t0 = time.process_time(); w.step(); t = time.process_time() - t0
        if r > 0: res[k].append(t)
        print(r, k, f"{t:.2f}", flush=True)
for k, v in res.items(): print(k, "mean", sum(v) / len(v))
