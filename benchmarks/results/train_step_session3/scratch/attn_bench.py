import time, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
torch.set_num_threads(1)
torch.manual_seed(0)
shapes = {"s1": (512, 1, 576, 144), "s2": (128, 2, 576, 144), "s3": (32, 5, 576, 144), "s4": (8, 8, 576, 576),
          "s1crop": (512, 1, 256, 144), "s4crop": (8, 8, 256, 576)}
def manual(q, k, v):
    s = torch.bmm(q.flatten(0,1) * q.shape[-1]**-0.5, k.flatten(0,1).transpose(1,2))
    p = torch.softmax(s, -1)
    return torch.bmm(p, v.flatten(0,1)).view(q.shape)
def run(fn, q, k, v, reps=3):
    ts = []
    for r in range(reps):
        qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
        t0 = time.process_time(); o = fn(qq, kk, vv); t1 = time.process_time()
        o.backward(g); t2 = time.process_time()
        ts.append((t1 - t0, t2 - t1))
    return min(ts, key=sum)
for name, (b, h, nq, nk) in shapes.items():
    q = torch.randn(b, h, nq, 32); k = torch.randn(b, h, nk, 32); v = torch.randn(b, h, nk, 32)
    g = torch.randn(b, h, nq, 32)
    res = {}
    res["flash"] = run(lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c), q, k, v)
    def mathp(a, b_, c):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(a, b_, c)
    res["math"] = run(mathp, q, k, v)
    res["manual"] = run(manual, q, k, v)
    print(name, " ".join(f"{n}: fwd {f*1e3:.0f} bwd {bw*1e3:.0f}" for n, (f, bw) in res.items()), flush=True)
