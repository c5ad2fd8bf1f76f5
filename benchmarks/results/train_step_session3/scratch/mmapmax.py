import sys, time, resource, ctypes, torch
torch.set_num_threads(1)
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
mode = sys.argv[1]
name = sys.argv[2] if len(sys.argv) > 2 else "patcher_small"
bs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
if mode == "nommap":
    libc = ctypes.CDLL(None); libc.mallopt.argtypes=[ctypes.c_int, ctypes.c_int]
    print("M_MMAP_MAX=0 ->", libc.mallopt(-4, 0))
from benchmarks.bench_train_step import Workload
w = Workload(name, bs, 256)
for i in range(5):
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.process_time()
    w.step()
    r1 = resource.getrusage(resource.RUSAGE_SELF); t1 = time.process_time()
    print(mode, name, i, f"{t1-t0:.2f}s", "minflt", r1.ru_minflt - r0.ru_minflt, "maxrss MiB", r1.ru_maxrss//1024, flush=True)
