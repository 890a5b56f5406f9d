"""The model registry and the import of every family's published checkpoint layout: detection
from the keys, --model checks, and one-line errors for every bad checkpoint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tessera.errors import CheckpointError, InputError
from tessera.model import TesseraModel, load_checkpoint, save_checkpoint
from tessera.model.config import ModelConfig
from tessera.model.published import detect_family, import_published
from tessera.model.registry import MODELS, V2_PARAMS_M, family_of, get_model, model_for_config
from tessera.model.stats import STATS, get_stats

V11_SMALL = ModelConfig(d_model=32, n_layers=2, n_heads=4, ffn_dim=64, latent_dim=192,
                        embed_dim=128, fusion="mlp", stats="v1.1-mpc")
V2_TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, ffn_dim=64, latent_dim=128,
                      fusion="mlp", pooling="attention", final_norm=True, stats="v2")


def test_registry_lists_every_published_model_with_its_facts():
    assert {"v1", "v1.1-mpc", "v1.1-aws", "v2-nano", "v2-small", "v2-medium", "v2-large",
            "tiny", "small"} <= set(MODELS)
    for m in MODELS.values():
        assert m.family in ("v1.0", "v1.1", "v2") and m.params.endswith(" M")
        assert m.stats in STATS and m.sampling and m.output_dim == 128
        if m.config is not None:  # the counted parameters agree with the registered count
            with torch.device("meta"):
                n = TesseraModel(m.config).num_parameters()
            assert f"{n / 1e6:.2f} M" == m.params, m.id
            assert family_of(m.config) == m.family
            assert model_for_config(m.config) is m
    assert TesseraModel(MODELS["v1.1-mpc"].config).num_parameters() == 57_708_738  # SPEC 3b
    assert MODELS["v2-small"].dims == (16, 32, 64, 128)
    with pytest.raises(InputError, match="unknown model 'v3'"):
        get_model("v3")


def test_statistics_sets_differ_and_v1_0_pools_the_orbits():
    assert get_stats("v1.0").pooled_s1 and not get_stats("v1.1-mpc").pooled_s1
    assert get_stats("v1.1-aws").s2_mean[0] == pytest.approx(2793.6589)
    assert get_stats("v2").s1_desc_std[1] == pytest.approx(1546.4733)
    with pytest.raises(InputError, match="unknown normalisation"):
        ModelConfig(stats="v9")


def test_s1_is_normalised_with_each_steps_orbit():
    m = TesseraModel(V11_SMALL)
    s = get_stats("v1.1-mpc")
    x = torch.tensor([[[6000.0, 3000.0], [6000.0, 3000.0]]])
    got = m.normalise_s1(x, torch.tensor([[0, 1]]))
    want = [(np.float32([6000, 3000]) - s.s1_asc_mean) / (s.s1_asc_std + np.float32(1e-9)),
            (np.float32([6000, 3000]) - s.s1_desc_mean) / (s.s1_desc_std + np.float32(1e-9))]
    assert np.array_equal(got[0].numpy(), np.stack(want))
    with pytest.raises(ValueError, match="differ by S1 orbit"):
        m.normalise_s1(x)


def _v11_file(tmp_path, cfg=V11_SMALL, **edit):
    sd = {"_orig_mod." + k: v for k, v in TesseraModel(cfg).state_dict().items()}
    sd["_orig_mod.projector.net.0.weight"] = torch.zeros(2, 2)
    sd.update(edit)
    path = tmp_path / "v11.pt"
    torch.save({"model_state": sd, "epoch": 1}, path)
    return path


def _v2_file(tmp_path, cfg=V2_TINY, args=None):
    path = tmp_path / "student.pt"
    a = {"repr_dim": 128, "latent_dim": cfg.d_model // 4, "num_layers": cfg.n_layers,
         "nhead": 4, "dim_feedforward": cfg.ffn_dim, "matryoshka_dims": "16,32,64,128",
         "enable_qk_norm": False, **(args or {})}
    torch.save({"model": TesseraModel(cfg).state_dict(), "args": a}, path)
    return path


def test_families_are_detected_from_the_keys(tmp_path):
    assert detect_family(torch.load(_v11_file(tmp_path), weights_only=True)) == "v1.1"
    assert detect_family(torch.load(_v2_file(tmp_path), weights_only=True)) == "v2"
    assert detect_family(TesseraModel(MODELS["tiny"].config).state_dict()) == "v1.0"
    assert detect_family({"encoder.weight": torch.zeros(1)}) is None


def test_v1_1_defaults_to_mpc_and_says_so(tmp_path):
    path = _v11_file(tmp_path)
    model, meta = load_checkpoint(path)
    assert model.config.stats == "v1.1-mpc" and meta["family"] == "v1.1"
    assert "MPC" in meta["note"] and "--model v1.1-aws" in meta["note"]
    assert sorted(meta["skipped"]) == ["projector.net.0.weight"]
    model, meta = load_checkpoint(path, "v1.1-aws")
    assert model.config.stats == "v1.1-aws" and not meta["note"]


def test_a_full_size_v1_1_file_is_the_registered_model(tmp_path):
    cfg = MODELS["v1.1-aws"].config
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in TesseraModel(cfg).state_dict().items()}
    sd = {k: torch.zeros(s) for k, s in shapes.items()}
    model, info = import_published({"model_state_dict": sd}, "f.pt", "v1.1-aws")
    assert info["model_id"] == "v1.1-aws" and model.config.embed_dim == 128


def test_v2_student_is_recognised_by_its_parameter_count(tmp_path):
    cfg = MODELS["v2-small"].config
    _, meta = load_checkpoint(_v2_file(tmp_path, cfg))
    assert meta["model_id"] == "v2-small" and meta["family"] == "v2"
    assert set(V2_PARAMS_M) == {m for m in MODELS if m.startswith("v2-")}


@pytest.mark.parametrize("asked", ["v1", "v1.1-mpc", "tiny"])
def test_a_checkpoint_under_another_familys_name_is_refused(tmp_path, asked):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_v2_file(tmp_path), asked)
    msg = str(err.value)
    assert asked in msg and "v2" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="v1.1"):
        load_checkpoint(_v11_file(tmp_path), "v2-small")


def test_our_checkpoint_under_another_name_is_refused(tmp_path):
    tiny = TesseraModel(MODELS["tiny"].config)
    path = save_checkpoint(tiny, tmp_path / "t.safetensors", preset="tiny")
    _, meta = load_checkpoint(path)
    assert meta["model_id"] == "tiny" and meta["family"] == "v1.0"
    with pytest.raises(CheckpointError, match="--model v2-small .*tiny"):
        load_checkpoint(path, "v2-small")


def test_our_v1_1_shaped_checkpoint_round_trips_its_statistics(tmp_path):
    aws = dataclasses.replace(V11_SMALL, stats="v1.1-aws")
    path = save_checkpoint(TesseraModel(aws), tmp_path / "m.safetensors")
    model, _ = load_checkpoint(path)
    assert model.config == aws


@pytest.mark.parametrize("case", ["missing", "shape", "extra", "truncated", "args", "qknorm",
                                  "garbage"])
def test_every_bad_checkpoint_gets_one_line_naming_file_and_expectation(tmp_path, case):
    if case == "missing":
        path = _v11_file(tmp_path)
        obj = torch.load(path, weights_only=True)
        del obj["model_state"]["_orig_mod.dim_reducer.4.bias"]
        torch.save(obj, path)
        want = "missing parameters: dim_reducer.4.bias"
    elif case == "shape":
        path = _v11_file(tmp_path, **{"_orig_mod.dim_reducer.1.weight": torch.zeros(5)})
        want = "wrong shape: dim_reducer.1.weight (5,)"
    elif case == "extra":
        path = _v11_file(tmp_path, **{"_orig_mod.s2_backbone.extra": torch.zeros(1)})
        want = "unexpected parameters: s2_backbone.extra"
    elif case == "truncated":
        path = _v2_file(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        want = "not a readable PyTorch checkpoint"
    elif case == "args":
        path = _v2_file(tmp_path, args={"dim_feedforward": 999})
        want = "args contradict the weights: args.dim_feedforward = 999, tensors say 64"
    elif case == "qknorm":
        path = _v2_file(tmp_path, args={"enable_qk_norm": True})
        want = "QK-norm"
    else:
        path = tmp_path / "x.pt"
        torch.save({"encoder.weight": torch.zeros(2)}, path)
        want = "nor a published TESSERA layout"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and want in msg, msg
    assert "\n" not in msg
