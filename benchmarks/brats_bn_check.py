"""Check of the BraTS bundle result: the same 8 tumour slices of pat0003 predicted by the last checkpoint with
BatchNorm in eval mode (running statistics) and with batch statistics (train mode, no gradient).

    python benchmarks/brats_bn_check.py   # after benchmarks/brats_bundle.py --iterations 20
"""
import sys, json, torch, numpy as np
sys.path.insert(0,'benchmarks'); sys.path.insert(0,'.')
from pathlib import Path
from monai.bundle import ConfigParser
torch.set_num_threads(1)
out=Path('benchmarks/results/brats_bundle'); dl=out/'datalist.json'
parser=ConfigParser(); parser.read_config('bundles/patcher_stroke/configs/train.json')
parser['dataset_dir']=str(dl.parent); parser['datalist']=str(dl); parser['network_def']['name']='small'
parser['train']['deterministic_transforms'][5]={"_target_":"CopyItemsd","keys":"adc","names":"eadc"}
pre=parser.get_parsed_content('validate#preprocessing'); net=parser.get_parsed_content('network_def')
st=torch.load(out / 'models' / f'checkpoint_epoch={sys.argv[1] if len(sys.argv) > 1 else 20}.pt',map_location='cpu',weights_only=True); net.load_state_dict(st['model'])
it=json.loads(dl.read_text())['validation'][0]; d=pre(dict(it)); img,lab=d['image'],d['label']
zs=np.nonzero(lab[0].sum(dim=(0,1)).numpy())[0]; z=zs[np.linspace(0,len(zs)-1,8).astype(int)]
x=img[...,z].permute(3,0,1,2).as_tensor().float(); y=lab[0][...,z].permute(2,0,1).as_tensor()>0.5
def dice(p,g): return float(2*(p&g).sum()/(p.sum()+g.sum()))
with torch.no_grad():
    net.eval(); p=net(x)[:,0]>0; print('eval mode: fg fraction %.3f dice %.3f'%(p.float().mean(),dice(p,y)))
    net.train(); p=net(x)[:,0]>0; print('BN batch statistics (train mode, no grad): fg fraction %.3f dice %.3f'%(p.float().mean(),dice(p,y)))
print('true fg fraction %.3f'%y.float().mean())
