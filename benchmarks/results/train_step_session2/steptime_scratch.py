import time, torch, sys
from monai_patcher.allocator import keep_freed_memory; keep_freed_memory()
import os
if os.environ.get("LATE_THP"): os.environ["THP_MEM_ALLOC_ENABLE"]="1"
from monai_patcher.networks import patcher_preset
from monai_patcher.losses import BCEIoULoss
import benchmarks.models as BM
torch.set_num_threads(1)
B=8
torch.manual_seed(0)
nets={'small':patcher_preset('small',in_channels=3,out_channels=1).train()}
if len(sys.argv)>1 and sys.argv[1]=='unet':
    nets['unet']=BM.build_model('unet',3,1).train() if hasattr(BM,'build_model') else None
x=torch.randn(B,3,256,256); y=(torch.rand(B,1,256,256)>0.5).float()
loss=BCEIoULoss()
opts={k:torch.optim.Adam(n.parameters(),1e-4) for k,n in nets.items()}
def step(k):
    opts[k].zero_grad(); out=nets[k](x); l=loss(out,y); l.backward(); opts[k].step()
res={}
for r in range(7):
    for k in nets:
        t0=time.process_time(); step(k); dt=time.process_time()-t0
        if r: res.setdefault(k,[]).append(round(dt,2))
import resource
print({k:(sorted(v)[len(v)//2],v) for k,v in res.items()}, 'minflt',resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
