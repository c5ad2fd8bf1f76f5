"""The bundles' precision and speed settings (configs only: no data): AMP on CUDA by default, CPU bf16 autocast
as an opt-in through the same ``amp`` switch, and the Patcher's fast paths on in training with no extra flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

# (config, [(inferer, engine)]) of each bundle file that runs a network: the config's ``inferer`` stays MONAI's own
# (so ``--validate#inferer#roi_size`` overrides keep working); the engine runs it through AutocastInferer
_ENGINES = {
    "train.json": [("train#inferer", "train#trainer"), ("validate#inferer", "validate#evaluator")],
    "inference.json": [("inferer", "evaluator")],
}


def _parser(bundle: str, config: str, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / config))
    parser.update({"bundle_root": str(BUNDLES / bundle), **overrides})  # paths (the checkpoint's record) resolve
    return parser


@pytest.mark.parametrize("bundle", ["patcher_stroke", "patcher_polyp"])
@pytest.mark.parametrize("config", sorted(_ENGINES))
def test_amp_default_off_on_cpu_and_cpu_bf16_opt_in(bundle, config):
    from monai_patcher.utils import AutocastInferer

    cpu = "$torch.device('cpu')"
    parser = _parser(bundle, config, device=cpu)
    assert parser.get_parsed_content("amp") is False  # the default on CPU
    for inferer, engine in _ENGINES[config]:
        wrapped = parser.get_parsed_content(f"{engine}#inferer")
        assert isinstance(wrapped, AutocastInferer) and not wrapped.enabled
        assert not isinstance(parser.get_parsed_content(inferer), AutocastInferer)  # the config's inferer is MONAI's
        assert parser.get_parsed_content(f"{engine}#amp") is False
    parser = _parser(bundle, config, device=cpu, amp=True)  # opted in: bf16 autocast in the inferer, MONAI's off
    for inferer, engine in _ENGINES[config]:
        assert parser.get_parsed_content(f"{engine}#inferer").enabled
        assert parser.get_parsed_content(f"{engine}#amp") is False
    # on CUDA (resolved as if there were one): MONAI's engine runs AMP with its gradient scaler, the wrapper stays off
    parser = _parser(bundle, config, device="$torch.device('cuda:0')", amp=True)
    for inferer, engine in _ENGINES[config]:
        assert not parser.get_parsed_content(f"{engine}#inferer").enabled
        assert parser.get_parsed_content(f"{engine}#amp") is True


@pytest.mark.parametrize("bundle", ["patcher_stroke", "patcher_polyp"])
def test_train_json_network_uses_the_fast_paths(bundle):
    from monai_patcher.networks import MoEDecoder, PatcherBlock

    net = _parser(bundle, "train.json", device="$torch.device('cpu')").get_parsed_content("network")
    parts = [m for m in net.modules() if isinstance(m, (PatcherBlock, MoEDecoder))]
    assert len(parts) == 5 and all(m.fast_paths for m in parts)


def test_cpu_training_step_with_the_bundles_amp_inferer():
    """One SupervisedTrainer iteration on CPU as train.json wires it with ``amp=True``: the forward runs in bf16,
    the loss and the prediction handed to the metrics are float32, and the weights move."""
    from monai.engines import SupervisedTrainer
    from monai.inferers import SimpleInferer

    from monai_patcher.losses import BCEIoULoss
    from monai_patcher.networks import patcher_preset
    from monai_patcher.utils import AutocastInferer

    torch.manual_seed(0)
    net = patcher_preset("tiny", in_channels=3, out_channels=1)
    dtypes = []
    net.decoder.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    data = [{"image": torch.randn(2, 3, 32, 32), "label": (torch.rand(2, 1, 32, 32) > 0.7).float()}]
    before = [p.detach().clone() for p in net.parameters()]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=BCEIoULoss(),
        inferer=AutocastInferer(SimpleInferer(), enabled=True), amp=False, decollate=False,
    )  # fmt: skip
    trainer.run()
    assert dtypes == [torch.bfloat16]
    assert trainer.state.output["pred"].dtype == torch.float32
    assert trainer.state.output["loss"].dtype == torch.float32 and torch.isfinite(trainer.state.output["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("bundle", ["patcher_stroke", "patcher_polyp"])
def test_train_json_optimizer_is_fused_and_steps_like_the_plain_one(bundle):
    """The bundles' Adam/AdamW is PyTorch's fused implementation (one kernel per step on CPU and CUDA; 2.5x faster
    for the paper preset's 83 M parameters, docs/architecture.md), and its step is the plain optimizer's up to
    float rounding on the same gradients."""
    parser = _parser(bundle, "train.json", device="$torch.device('cpu')")
    fused = parser.get_parsed_content("optimizer")
    assert fused.param_groups[0]["fused"] is True
    params = fused.param_groups[0]["params"]
    # the same config with the flag off, its parameters set to the fused one's
    plain = _parser(bundle, "train.json", device="$torch.device('cpu')", **{"optimizer#fused": False})
    plain = plain.get_parsed_content("optimizer")
    assert not plain.param_groups[0]["fused"]
    copies = plain.param_groups[0]["params"]
    with torch.no_grad():
        for p, q in zip(params, copies, strict=True):
            q.copy_(p)
    torch.manual_seed(0)
    for _ in range(3):
        for p, q in zip(params, copies):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
