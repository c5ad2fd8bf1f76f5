# memory-bound ops at this machine's bandwidth: ns per element on a cache-sized and a stage-1-sized tensor
import sys, time, torch
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1)
for n in (2**20, 37_748_736):
    x = torch.randn(n); reps = max(2, 2**26 // n)
    for name, fn in (("gelu", torch.nn.functional.gelu), ("relu", torch.relu), ("copy", torch.clone), ("add", lambda t: t + t)):
        fn(x); fn(x); t0 = time.process_time()
        for _ in range(reps): fn(x)
        dt = (time.process_time() - t0) / reps
        print(n, name, f"{dt / n * 1e9:.2f} ns/elem")
