import time, torch, torch.nn.functional as F, sys
sys.path.insert(0, ".")  # run from the repository root
from monai_patcher.allocator import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1); torch.manual_seed(0)
cl = torch.channels_last

class FewOutConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        B, C, H, W = x.shape; O = w.shape[0]
        xl = x.contiguous(memory_format=cl).permute(0, 2, 3, 1)  # B H W C view
        taps = w.permute(1, 2, 3, 0).reshape(C, 9 * O)  # C x (ky, kx, O)
        z = torch.mm(xl.reshape(-1, C), taps).view(B, H, W, 3, 3, O)
        out = b.expand(B, H, W, O).clone() if b is not None else z.new_zeros(B, H, W, O)
        for ky in range(3):
            for kx in range(3):
                dy, dx = ky - 1, kx - 1  # out[y, x] += z[y + dy, x + dx, tap]
                oy0, oy1 = max(0, -dy), H - max(0, dy); ox0, ox1 = max(0, -dx), W - max(0, dx)
                out[:, oy0:oy1, ox0:ox1] += z[:, oy0 + dy:oy1 + dy, ox0 + dx:ox1 + dx, ky, kx]
        ctx.save_for_backward(xl, taps)
        ctx.has_bias = b is not None
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        xl, taps = ctx.saved_tensors
        B, H, W, C = xl.shape; O = taps.shape[1] // 9
        gl = g.contiguous(memory_format=cl).permute(0, 2, 3, 1)  # B H W O
        gz = gl.new_zeros(B, H, W, 3, 3, O)
        for ky in range(3):
            for kx in range(3):
                dy, dx = ky - 1, kx - 1
                oy0, oy1 = max(0, -dy), H - max(0, dy); ox0, ox1 = max(0, -dx), W - max(0, dx)
                gz[:, oy0 + dy:oy1 + dy, ox0 + dx:ox1 + dx, ky, kx] = gl[:, oy0:oy1, ox0:ox1]
        gzf = gz.view(-1, 9 * O)
        gx = torch.mm(gzf, taps.t()).view(B, H, W, C).permute(0, 3, 1, 2)
        gw = torch.mm(xl.reshape(-1, C).t(), gzf).view(C, 3, 3, O).permute(3, 0, 1, 2)
        gb = gl.sum((0, 1, 2)) if ctx.has_bias else None
        return gx, gw, gb

# exactness in float64
x = torch.randn(2, 8, 7, 9, dtype=torch.float64).to(memory_format=cl).requires_grad_()
w = torch.randn(4, 8, 3, 3, dtype=torch.float64).requires_grad_(); b = torch.randn(4, dtype=torch.float64).requires_grad_()
g = torch.randn(2, 4, 7, 9, dtype=torch.float64)
ref = F.conv2d(x, w, b, padding=1); gr = torch.autograd.grad(ref, (x, w, b), g)
out = FewOutConv3x3.apply(x, w, b); go = torch.autograd.grad(out, (x, w, b), g)
print("max err", (out - ref).abs().max().item(), [(a - c).abs().max().item() for a, c in zip(go, gr)])

B, C, H, O = 8, 128, 128, 4
x = torch.randn(B, C, H, H).to(memory_format=cl).requires_grad_()
w = torch.randn(O, C, 3, 3).to(memory_format=cl).requires_grad_(); b = torch.randn(O).requires_grad_()
g = torch.randn(B, O, H, H).to(memory_format=cl)
res = {"conv": [], "gemm": []}
for r in range(6):
    for name in (("conv", "gemm") if r % 2 == 0 else ("gemm", "conv")):
        t0 = time.process_time()
        y = F.conv2d(x, w, b, padding=1) if name == "conv" else FewOutConv3x3.apply(x, w, b)
        t1 = time.process_time(); y.backward(g); t2 = time.process_time()
        x.grad = w.grad = b.grad = None
        res[name].append((t1 - t0, t2 - t1))
for k, v in res.items():
    v = v[1:]
    print(k, "fwd", [round(a * 1e3) for a, _ in v], "bwd", [round(c * 1e3) for _, c in v])
