"""The model against an independent re-implementation of SPEC section 3, the published-layout
import, checkpoints, and padding invariance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tessera.bands import S1_MEAN, S1_STD, S2_MEAN, S2_STD
from tessera.model import (CheckpointConfigError, CheckpointLayoutError, ModelConfig, PRESETS,
                           TesseraModel, load_checkpoint, load_published, save_checkpoint)

# --- an independent, straightforward implementation of SPEC section 3 -------------------------


def ref_linear(sd, name, x):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def ref_layer_norm(sd, name, x, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]


def ref_backbone(sd, p, x, doy, n_heads):
    """x: (B, T, bands) normalised; doy: (B, T). Published parameter names under prefix p."""
    d = sd[p + "embedding.0.weight"].shape[0]
    h = ref_linear(sd, p + "embedding.2", torch.relu(ref_linear(sd, p + "embedding.0", x)))
    pe = torch.zeros(*doy.shape, d)
    for i in range(0, d, 2):
        pe[..., i] = torch.sin(doy / 10000 ** (i / d))
        pe[..., i + 1] = torch.cos(doy / 10000 ** (i / d))
    h = h + pe
    n_layers = len({k[len(p):].split(".")[2] for k in sd if k.startswith(p + "transformer_encoder.layers.")})
    b, t, _ = h.shape
    dh = d // n_heads
    for i in range(n_layers):
        q_ = f"{p}transformer_encoder.layers.{i}."
        w, bias = sd[q_ + "self_attn.in_proj_weight"], sd[q_ + "self_attn.in_proj_bias"]
        q, k, v = (h @ w[j * d:(j + 1) * d].T + bias[j * d:(j + 1) * d] for j in range(3))
        heads = []
        for hd in range(n_heads):
            sl = slice(hd * dh, (hd + 1) * dh)
            att = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh), dim=-1)
            heads.append(att @ v[..., sl])
        a = ref_linear(sd, q_ + "self_attn.out_proj", torch.cat(heads, -1))
        h = ref_layer_norm(sd, q_ + "norm1", h + a)
        f = ref_linear(sd, q_ + "linear2", torch.relu(ref_linear(sd, q_ + "linear1", h)))
        h = ref_layer_norm(sd, q_ + "norm2", h + f)
    g = p + "attn_pool.temporal_context.gru_cell."
    hid = torch.zeros(b, d)
    ctx = []
    for step in range(t):
        xt = h[:, step]
        r = torch.sigmoid(xt @ sd[g + "W_ir.weight"].T + hid @ sd[g + "W_hr.weight"].T + sd[g + "b_r"])
        z = torch.sigmoid(xt @ sd[g + "W_iz.weight"].T + hid @ sd[g + "W_hz.weight"].T + sd[g + "b_z"])
        # the published cell: reset gate before the hidden matrix, update gate weighs the new
        n = torch.tanh(xt @ sd[g + "W_ih.weight"].T + (r * hid) @ sd[g + "W_hh.weight"].T + sd[g + "b_h"])
        hid = (1 - z) * hid + z * n
        ctx.append(hid)
    ctx = torch.stack(ctx, 1)
    scores = ref_linear(sd, p + "attn_pool.query", ref_layer_norm(sd, p + "attn_pool.layer_norm", ctx))
    w = torch.softmax(scores.squeeze(-1), dim=1)
    return (w.unsqueeze(-1) * h).sum(1)


def ref_forward(sd, s2, s2_doy, s1, s1_doy, n_heads=4):
    x2 = (s2 - torch.tensor(S2_MEAN)) / (torch.tensor(S2_STD) + 1e-9)
    x1 = (s1 - torch.tensor(S1_MEAN)) / (torch.tensor(S1_STD) + 1e-9)
    h2 = ref_backbone(sd, "s2_backbone.", x2, s2_doy.float(), n_heads)
    h1 = ref_backbone(sd, "s1_backbone.", x1, s1_doy.float(), n_heads)
    return ref_linear(sd, "dim_reducer.0", torch.cat([h2, h1], -1))


def published_state_dict(d=32, n_layers=2, ffn=48, latent=128, seed=0):
    """Random weights under the published parameter names."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {}
    for bb, bands in (("s2_backbone.", 10), ("s1_backbone.", 2)):
        sd[bb + "embedding.0.weight"], sd[bb + "embedding.0.bias"] = r(d, bands), r(d)
        sd[bb + "embedding.2.weight"], sd[bb + "embedding.2.bias"] = r(d, d), r(d)
        for i in range(n_layers):
            q = f"{bb}transformer_encoder.layers.{i}."
            sd[q + "self_attn.in_proj_weight"], sd[q + "self_attn.in_proj_bias"] = r(3 * d, d), r(3 * d)
            sd[q + "self_attn.out_proj.weight"], sd[q + "self_attn.out_proj.bias"] = r(d, d), r(d)
            sd[q + "linear1.weight"], sd[q + "linear1.bias"] = r(ffn, d), r(ffn)
            sd[q + "linear2.weight"], sd[q + "linear2.bias"] = r(d, ffn), r(d)
            for nm in ("norm1", "norm2"):
                sd[q + nm + ".weight"], sd[q + nm + ".bias"] = 1 + r(d), r(d)
        gc = bb + "attn_pool.temporal_context.gru_cell."
        for w in ("W_ir", "W_iz", "W_ih", "W_hr", "W_hz", "W_hh"):
            sd[gc + w + ".weight"] = r(d, d)
        for b_ in ("b_r", "b_z", "b_h"):
            sd[gc + b_] = r(d)
        sd[bb + "attn_pool.layer_norm.weight"], sd[bb + "attn_pool.layer_norm.bias"] = 1 + r(d), r(d)
        sd[bb + "attn_pool.query.weight"], sd[bb + "attn_pool.query.bias"] = r(1, d), r(1)
    sd["dim_reducer.0.weight"], sd["dim_reducer.0.bias"] = r(latent, 2 * d), r(latent)
    return sd


def random_inputs(b=5, t2=40, t1=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    s2 = torch.randint(0, 9000, (b, t2, 10), generator=g).float()
    s1 = torch.randint(1, 12000, (b, t1, 2), generator=g).float()
    s2_doy = torch.sort(torch.randint(1, 367, (b, t2), generator=g), dim=1).values
    s1_doy = torch.sort(torch.randint(1, 367, (b, t1), generator=g), dim=1).values
    return s2, s2_doy, s1, s1_doy


def test_published_import_matches_independent_reference():
    sd = published_state_dict()
    model = load_published(sd)
    inputs = random_inputs()
    with torch.inference_mode():
        ours = model(*inputs)
    ref = ref_forward(sd, *inputs)
    assert ours.shape == (5, 128)
    assert (ours - ref).abs().max().item() < 1e-5


def test_published_import_v1_sizes_and_wrappers(tmp_path):
    sd = published_state_dict(d=512, n_layers=4, ffn=4096)
    wrapped = {"model_state_dict": {"module._orig_mod." + k: v for k, v in sd.items()}, "epoch": 3}
    path = tmp_path / "published.pt"
    torch.save(wrapped, path)
    model = load_published(path)
    assert model.config.d_model == 512 and model.config.n_layers == 4
    assert model.config.ffn_dim == 4096
    assert model.num_parameters() == TesseraModel(PRESETS["v1"]).num_parameters()
    inputs = random_inputs(b=2, t2=12, t1=9)
    with torch.inference_mode():
        ours = model(*inputs)
    ref = ref_forward(sd, *inputs)
    # v1 sizes with these weights give outputs of magnitude ~20: float32 noise is ~1e-4 absolute
    assert (ours - ref).abs().max().item() < 1e-5 * max(1.0, ref.abs().max().item())
    # the generic loader detects the layout by its keys
    model2, meta = load_checkpoint(path)
    assert meta["source"] == "published"
    with torch.inference_mode():
        assert torch.equal(model2(*inputs), ours)


@pytest.mark.parametrize("edit, offending", [
    (lambda sd: sd.update({"s2_backbone.extra.weight": torch.zeros(3)}), "s2_backbone.extra.weight"),
    (lambda sd: sd.pop("s1_backbone.attn_pool.query.bias"), "s1_backbone.attn_pool.query.bias"),
    (lambda sd: sd.update({"dim_reducer.0.bias": torch.zeros(7)}), "dim_reducer.0.bias"),
    (lambda sd: sd.pop("s2_backbone.attn_pool.temporal_context.gru_cell.b_h"),
     "s2_backbone.attn_pool.temporal_context.gru_cell.b_h"),
])
def test_published_import_refuses_with_offending_keys(edit, offending):
    sd = published_state_dict()
    edit(sd)
    with pytest.raises(CheckpointLayoutError) as err:
        load_published(sd)
    assert any(offending in k for k in err.value.keys)
    assert offending in str(err.value)


def test_published_import_refuses_a_torch_gru_layout():
    """tessera-eo 0.1 kept torch.nn.GRU parameters (`weight_ih_l0`, ...): not the published
    cell, refused by name."""
    sd = {k: v for k, v in TesseraModel(PRESETS["tiny"]).state_dict().items()
          if "temporal_context" not in k}
    for bb in ("s2_backbone.", "s1_backbone."):
        sd[bb + "attn_pool.temporal_context.weight_ih_l0"] = torch.zeros(384, 128)
    with pytest.raises(CheckpointLayoutError, match="not a published TESSERA layout"):
        load_published(sd)


def test_presets_sizes():
    counts = {n: TesseraModel(c).num_parameters() for n, c in PRESETS.items()}
    assert abs(counts["v1"] - 45.8e6) < 0.1e6
    assert 0.8e6 <= counts["tiny"] <= 1.5e6
    assert 5e6 <= counts["small"] <= 10e6


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = TesseraModel(PRESETS["tiny"]).eval()
    path = save_checkpoint(model, tmp_path / "ck", preset="tiny", extra={"note": "test"})
    assert path.suffix == ".safetensors" and (tmp_path / "ck.json").exists()
    loaded, meta = load_checkpoint(path)
    assert meta["preset"] == "tiny" and meta["note"] == "test"
    inputs = random_inputs(b=3, t2=7, t1=5)
    with torch.inference_mode():
        assert torch.equal(loaded(*inputs), model(*inputs))
    # a lone .safetensors (JSON lost) still loads from its header
    (tmp_path / "ck.json").unlink()
    loaded2, _ = load_checkpoint(path)
    with torch.inference_mode():
        assert torch.equal(loaded2(*inputs), model(*inputs))


@pytest.mark.parametrize("field, value", [
    ("s2_bands", ["B02", "B03", "B04", "B08", "B8A", "B05", "B06", "B07", "B11", "B12"]),
    ("normalisation", {"s2_mean": [0.0] * 10}),
    ("format_version", 99),
    ("preset", "v1"),
    ("model", {"d_model": 128, "bogus": 1}),
])
def test_checkpoint_config_mismatch_fails_clearly(tmp_path, field, value):
    model = TesseraModel(PRESETS["tiny"])
    save_checkpoint(model, tmp_path / "ck", preset="tiny")
    meta = json.loads((tmp_path / "ck.json").read_text())
    meta[field] = value
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointConfigError) as err:
        load_checkpoint(tmp_path / "ck.safetensors")
    assert "ck.json" in str(err.value) and field.split(".")[0] in str(err.value)


def test_checkpoint_weights_shape_mismatch(tmp_path):
    save_checkpoint(TesseraModel(PRESETS["tiny"]), tmp_path / "ck", preset="tiny")
    meta = json.loads((tmp_path / "ck.json").read_text())
    meta["preset"] = None
    meta["model"]["ffn_dim"] = 512
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointLayoutError, match="wrong shape"):
        load_checkpoint(tmp_path / "ck.safetensors")


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = TesseraModel(ModelConfig(d_model=32, n_layers=2, n_heads=4, ffn_dim=64)).eval()
    s2, s2_doy, s1, s1_doy = random_inputs(b=1, t2=9, t1=6)
    with torch.inference_mode():
        alone = model(s2, s2_doy, s1, s1_doy)
        # the same pixel padded to longer sequences, next to a random longer pixel
        s2p, s2dp, s1p, s1dp = random_inputs(b=2, t2=15, t1=11, seed=7)
        s2p[0, :9], s2dp[0, :9], s1p[0, :6], s1dp[0, :6] = s2[0], s2_doy[0], s1[0], s1_doy[0]
        s2p[0, 9:] = 1e6  # garbage in the padding must not leak
        m2 = torch.arange(15)[None] < torch.tensor([[9], [15]])
        m1 = torch.arange(11)[None] < torch.tensor([[6], [11]])
        padded = model(s2p, s2dp, s1p, s1dp, m2, m1)
    assert (padded[0] - alone[0]).abs().max().item() < 1e-5


def test_doy_encoding_is_the_transformer_sinusoid():
    from tessera.model import doy_encoding
    pe = doy_encoding(torch.tensor([[17.0]]), 8)[0, 0]
    expect = [f(17 / 10000 ** (i / 8)) for i in range(0, 8, 2) for f in (math.sin, math.cos)]
    np.testing.assert_allclose(pe.numpy(), expect, rtol=1e-6, atol=1e-6)
