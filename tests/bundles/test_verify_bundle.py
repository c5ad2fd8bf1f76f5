"""What MONAI model-zoo's ``ci/verify_bundle.py`` and its pre-commit hooks check, for both bundles (our code).

Required files, version and changelog, the metadata against MONAI's schema (the shipped copy: offline), the JSON
formatting of model-zoo's ``pretty-format-json`` hook, ``verify_net_in_out``, and ``ckpt_export`` of weights the test
makes, with ``bundle_root`` set the way model-zoo's CI sets it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bundle_cli import REPO_ROOT  # noqa: E402

BUNDLES = ("patcher_polyp", "patcher_stroke")
SCHEMA = REPO_ROOT / "bundles" / "schema" / "meta_schema_20240725.json"
# model-zoo's necessary files (metadata, LICENSE), its preferred inference config, and what its template asks for
REQUIRED = ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
            "configs/multi_gpu_train.json", "configs/multi_gpu_evaluate.json", "configs/logging.conf",
            "docs/README.md", "docs/data_license.txt")
# the data_type values of model-zoo's bundles
DATA_TYPES = ("nibabel", "nifti", "dicom", "png", "jpeg", "tiff", "numpy", "RGB")


def folder(bundle: str) -> Path:
    return REPO_ROOT / "bundles" / bundle


def metadata(bundle: str) -> dict:
    return json.loads((folder(bundle) / "configs" / "metadata.json").read_text())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_required_files(bundle):
    missing = [f for f in REQUIRED if not (folder(bundle) / f).is_file()]
    assert not missing and (folder(bundle) / "models").is_dir(), missing
    card = (folder(bundle) / "docs" / "README.md").read_text()
    for section in ("Model Overview", "Data", "Training configuration", "Performance", "MONAI Bundle Commands",
                    "Export checkpoint to TorchScript", "TensorRT", "Limitations", "Citation", "References"):
        assert f"{section}" in card, f"model card lacks {section!r}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_version_and_changelog(bundle):
    meta = metadata(bundle)
    assert meta["version"] in meta["changelog"], "the version must have a changelog entry"
    for version, entry in meta["changelog"].items():
        assert "\n" not in entry and len(entry) <= 160, f"changelog {version}: one short line, not {len(entry)} chars"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_validates_against_shipped_schema(bundle):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    meta = metadata(bundle)
    assert meta["schema"].endswith("meta_schema_20240725.json")
    jsonschema.validate(instance=meta, schema=schema)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_metadata_offline(bundle):
    # MONAI downloads the schema only when `filepath` does not exist: the shipped copy keeps this offline
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(folder(bundle) / "configs" / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_is_what_model_zoo_lists(bundle):
    """A name, a usual data_type, no placeholder metrics (no trained model: no eval_metrics at all)."""
    meta = metadata(bundle)
    assert meta["name"] and meta["data_type"] in DATA_TYPES, (meta.get("name"), meta["data_type"])
    assert all(isinstance(v, float) and v > 0 for v in meta.get("eval_metrics", {}).values()), meta["eval_metrics"]
    post = meta["network_data_format"]["post_processed_outputs"]["pred"]
    assert post["value_range"] == [0, 1] and post["num_channels"] == meta["network_data_format"]["outputs"]["pred"]["num_channels"]


def test_polyp_input_value_range_is_the_normalised_rgb_range():
    """[min, max] of (RGB / 255 - ImageNet mean) / ImageNet std over the channels, as the configs normalise."""
    cfg = json.loads((folder("patcher_polyp") / "configs" / "inference.json").read_text())
    norm = next(t for t in cfg["preprocessing"]["transforms"] if t["_target_"] == "NormalizeIntensityd")
    low = min(-m / s for m, s in zip(norm["subtrahend"], norm["divisor"]))
    high = max((1 - m) / s for m, s in zip(norm["subtrahend"], norm["divisor"]))
    value_range = metadata("patcher_polyp")["network_data_format"]["inputs"]["image"]["value_range"]
    assert value_range == pytest.approx([low, high], abs=1e-4)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_are_formatted_like_model_zoo(bundle):
    """model-zoo's pre-commit ``pretty-format-json --autofix --no-sort-keys --indent=4`` would change nothing."""
    for path in sorted((folder(bundle) / "configs").glob("*.json")):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{path.name} is not formatted as model-zoo's hook"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    configs = folder(bundle) / "configs"
    verify_net_in_out("network_def", meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                      bundle_root=str(folder(bundle)), **{"network_def#name": "tiny"})


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_of_weights_made_by_the_test(bundle, tmp_path):
    """model-zoo's TorchScript check with weights written here into ``<bundle_root>/models/model.pt``: the exported
    module gives the eager network's output and carries the bundle's metadata."""
    from monai.bundle import ConfigParser, ckpt_export
    from monai.data import load_net_with_metadata

    configs = folder(bundle) / "configs"
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser["network_def#name"] = "tiny"
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    # model-zoo's verify_torchscript: bundle_root is the bundle, files default to <bundle_root>/models
    ckpt_export("network_def", filepath=str(tmp_path / "models" / "verify_model.ts"),
                ckpt_file=str(tmp_path / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                config_file=str(configs / "inference.json"), bundle_root=str(tmp_path), **{"network_def#name": "tiny"})
    scripted, meta, _ = load_net_with_metadata(str(tmp_path / "models" / "verify_model.ts"))
    assert meta["version"] == metadata(bundle)["version"]
    channels = metadata(bundle)["network_data_format"]["inputs"]["image"]["num_channels"]
    x = torch.randn(1, channels, 64, 48)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-5)
        assert scripted(torch.zeros(1, channels, 64, 48)).shape == (1, 1, 64, 48)
