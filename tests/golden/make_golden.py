"""Golden fixtures from the ORIGINAL TESSERA code (github.com/ucam-eo/tessera), run outside this
repository: `python tests/golden/make_golden.py --upstream /path/to/ucam-eo/tessera`.

For each model family the upstream modules are imported from that checkout, built small, filled
with deterministic weights (`fixture_weights`: a frozen numpy RandomState stream per parameter, in
sorted name order, so the tests rebuild the same weights without storing them), and run on small
random inputs. The inputs and the upstream outputs are saved as `.npz` beside this script, with
the upstream commit in `golden.json`. The tests feed the same inputs to this package's models
(which never import upstream code) and compare.

Fixtures:
- `v1_0.npz` (model level): the v1.0 backbones (`tessera_infer_QAT/src/models/modules.py`: the
  TransformerEncoder with the published CustomGRU pooling), concat fusion and Linear dim
  reducer, on 40 + 40 sampled steps per pixel normalised as the upstream inference does.
- `tile_v1_0.npz` (end to end): a 5 x 5 tile where every pixel has exactly 40 valid S2 and 40
  valid S1 observations, so that the upstream random draw (40 of 40, sorted) is deterministic;
  run through the upstream v1.0 dataset, sampling and per-pixel quantisation.
- `tile_v1_1_mpc.npz`, `tile_v1_1_aws.npz` (end to end): `infer_v1_1.py` itself, run as a
  script on a 7 x 7 tile with irregular masks (0 to 280 valid S2 dates per pixel, across every
  bucket edge; both orbits, one orbit only, no S1; VV = 0 with VH != 0) and a checkpoint saved the
  way upstream saves them (`model_state`, `_orig_mod.` prefixes, a projector to skip); the float
  embeddings come from the same upstream dataset and model in process.
- `tile_v2.npz` (end to end): the v2 student's `load_model` and `encode_tile` on the same tile,
  quantised with its `quantize`.
The tiles are not stored: `golden_tile` rebuilds them from a frozen numpy stream.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

#: The small v1.0-shaped model of the fixture: d_model = 4 * latent (as upstream builds it).
V1_SMALL = {"latent_dim": 8, "nhead": 4, "num_encoder_layers": 4, "dim_feedforward": 64}


def fixture_weights(shapes: dict[str, tuple[int, ...]], seed: int = 1000) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for every parameter name, from a numpy RandomState (a frozen
    stream) seeded `seed + index` in sorted name order: N(0, 1) / sqrt(fan in); normalisation
    weights 1 + N(0, 0.1); attention-pool queries 10 times larger, so the pooling weights are far
    from uniform and depend on the GRU (a wrong GRU cell changes the outputs)."""
    out = {}
    for i, name in enumerate(sorted(shapes)):
        shape = tuple(shapes[name])
        fan_in = shape[-1] if len(shape) > 1 else max(shape[0], 1)
        z = np.random.RandomState(seed + i).standard_normal(shape)
        if name.endswith("weight") and len(shape) == 1:  # LayerNorm scales
            w = 1.0 + 0.1 * z
        elif "query" in name:
            w = 10.0 * z / np.sqrt(fan_in)
        else:
            w = z / np.sqrt(fan_in)
        out[name] = w.astype(np.float32)
    return out


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _constants(path: Path) -> dict[str, np.ndarray]:
    """The v1.0 normalisation constants as the upstream dataset module states them."""
    text = path.read_text()
    out = {}
    for name in ("S2_BAND_MEAN", "S2_BAND_STD", "S1_BAND_MEAN", "S1_BAND_STD"):
        m = re.search(name + r"\s*=\s*np\.array\(\[([^\]]*)\]", text)
        assert m, name
        out[name] = np.array([float(v) for v in m.group(1).split(",")], dtype=np.float32)
    return out


def v1_inputs(n: int = 24, steps: int = 40, seed: int = 7) -> dict[str, np.ndarray]:
    """n pixels of sampled steps: raw S2 (reflectance x 10 000), raw S1 int16 codes, sorted days
    of year (repeats allowed: upstream samples with replacement when short of valid dates)."""
    rng = np.random.RandomState(seed)
    s2 = rng.randint(1, 9000, (n, steps, 10)).astype(np.uint16)
    s1 = rng.randint(2000, 9000, (n, steps, 2)).astype(np.int16)
    s2_doy = np.sort(rng.randint(1, 367, (n, steps)), axis=1).astype(np.int16)
    s1_doy = np.sort(rng.randint(1, 367, (n, steps)), axis=1).astype(np.int16)
    return {"s2": s2, "s1": s1, "s2_doy": s2_doy, "s1_doy": s1_doy}


def make_v1(upstream: Path) -> dict[str, np.ndarray]:
    import torch

    src = upstream / "tessera_infer_QAT" / "src"
    modules = _load(src / "models" / "modules.py", "upstream_modules")
    const = _constants(src / "datasets" / "ssl_dataset.py")
    net = _upstream_v1_net(modules)
    s2b, s1b = net.s2_backbone, net.s1_backbone
    _weights_into(net)
    x = v1_inputs()
    s2 = (x["s2"].astype(np.float32) - const["S2_BAND_MEAN"]) / (const["S2_BAND_STD"] + 1e-9)
    s1 = (x["s1"].astype(np.float32) - const["S1_BAND_MEAN"]) / (const["S1_BAND_STD"] + 1e-9)
    s2_in = np.concatenate([s2, x["s2_doy"][..., None]], axis=-1).astype(np.float32)
    s1_in = np.concatenate([s1, x["s1_doy"][..., None]], axis=-1).astype(np.float32)
    with torch.no_grad():
        fused = torch.cat([s2b(torch.from_numpy(s2_in)), s1b(torch.from_numpy(s1_in))], dim=-1)
        out = net.dim_reducer(fused).numpy()
    return {**x, "embedding": out.astype(np.float32)}


# --- end-to-end tile fixtures ---------------------------------------------------------------

#: The small v1.1-shaped model: d_model 32, and a 192-d representation of which 128 are kept.
V11_SMALL = {"latent_dim": 8, "representation_dim": 192, "heads": 4, "layers": 2, "ffn": 64}
#: The small v2 student.
V2_SMALL = {"repr_dim": 128, "latent_dim": 8, "num_layers": 2, "nhead": 4,
            "dim_feedforward": 64, "matryoshka_dims": "16,32,64,128", "enable_qk_norm": False}
#: S2 valid-date counts of the 49 pixels of the irregular tile: 0 to 280 across every bucket
#: edge (multiples of 8 and the 256 cap).
S2_COUNTS = [0, 1, 2, 3, 5, 7, 8, 9, 12, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 41, 47, 48, 63,
             64, 65, 96, 100, 127, 128, 129, 150, 191, 192, 193, 200, 231, 232, 247, 248, 249,
             255, 256, 257, 260, 263, 270, 279, 280, 0]


def golden_tile(kind: str) -> dict[str, np.ndarray]:
    """The arrays of a fixture tile (`bands`, `masks`, `doys`, `sar_ascending`, ...).

    "irregular" (v1.1, v2): 7 x 7 px, 280 S2 dates, 40 ascending and 36 descending S1 dates;
    pixel 0 has no S2 (S1 only), pixel 1 no S1, pixel 48 neither; pixels 2-6 have one orbit only
    (asc, desc, asc, desc, asc); every tenth valid S1 step has VV = 0 (still valid).
    "exact40" (v1.0): 5 x 5 px, 50 S2 and 30 + 45 S1 dates, exactly 40 valid of each sensor."""
    rng = np.random.RandomState({"irregular": 11, "exact40": 12}[kind])
    if kind == "irregular":
        h = w = 7
        t2, ta, td = 280, 40, 36
        s2_counts = S2_COUNTS
    else:
        h = w = 5
        t2, ta, td = 50, 30, 45
        s2_counts = [40] * (h * w)
    n = h * w
    doys = np.sort(rng.choice(np.arange(1, 367), t2, replace=False)).astype(np.int16)
    bands = rng.randint(1, 9000, (t2, n, 10)).astype(np.uint16)
    masks = np.zeros((t2, n), np.uint8)
    for p, c in enumerate(s2_counts):
        masks[rng.choice(t2, c, replace=False), p] = 1
    asc_doy = np.sort(rng.choice(np.arange(1, 367), ta, replace=False)).astype(np.int16)
    desc_doy = np.sort(rng.choice(np.arange(1, 367), td, replace=False)).astype(np.int16)
    asc = rng.randint(2000, 9000, (ta, n, 2)).astype(np.int16)
    desc = rng.randint(2000, 9000, (td, n, 2)).astype(np.int16)
    asc_ok = np.zeros((ta, n), bool)
    desc_ok = np.zeros((td, n), bool)
    for p in range(n):
        if kind == "exact40":
            na = [0, 10, 20, 25, 30][p % 5]
            asc_ok[rng.choice(ta, na, replace=False), p] = True
            desc_ok[rng.choice(td, 40 - na, replace=False), p] = True
            continue
        if p in (1, 48):
            continue  # no S1 at all
        one = {2: "a", 3: "d", 4: "a", 5: "d", 6: "a"}.get(p)
        if one != "d":
            asc_ok[:, p] = rng.rand(ta) < rng.uniform(0.2, 0.9)
        if one != "a":
            desc_ok[:, p] = rng.rand(td) < rng.uniform(0.2, 0.9)
    for arr, ok in ((asc, asc_ok), (desc, desc_ok)):
        arr[~ok] = 0
        t_idx, p_idx = np.nonzero(ok)
        vv0 = (np.arange(len(t_idx)) % 10) == 3
        arr[t_idx[vv0], p_idx[vv0], 0] = 0
    return {"bands": bands.reshape(t2, h, w, 10), "masks": masks.reshape(t2, h, w),
            "doys": doys, "sar_ascending": asc.reshape(ta, h, w, 2),
            "sar_ascending_doy": asc_doy, "sar_descending": desc.reshape(td, h, w, 2),
            "sar_descending_doy": desc_doy}


def write_tile_npy(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    return folder


def _stub_unused_imports() -> None:
    """The upstream v1.0 dataset module imports tqdm and joblib at the top for code paths the
    fixtures do not run; stand-ins keep this script's dependencies to numpy and torch."""
    import types
    for name, attrs in (("tqdm", ("tqdm",)), ("joblib", ("Parallel", "delayed"))):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                mod = types.ModuleType(name)
                for a in attrs:
                    setattr(mod, a, None)
                sys.modules[name] = mod


def _upstream_v1_net(modules):  # type: ignore[no-untyped-def]
    """The upstream v1.0 network at V1_SMALL sizes: its two backbones and one Linear fusion."""
    import torch

    c = V1_SMALL
    net = torch.nn.Module()
    net.s2_backbone = modules.TransformerEncoder(10, c["latent_dim"], c["nhead"],
                                                 c["num_encoder_layers"], c["dim_feedforward"])
    net.s1_backbone = modules.TransformerEncoder(2, c["latent_dim"], c["nhead"],
                                                 c["num_encoder_layers"], c["dim_feedforward"])
    net.dim_reducer = torch.nn.Sequential(torch.nn.Linear(8 * c["latent_dim"], c["latent_dim"]))
    return net


def _weights_into(net, seed: int = 1000) -> dict[str, np.ndarray]:
    import torch
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    weights = fixture_weights(shapes, seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    net.eval()
    return weights


def make_tile_v1(upstream: Path, work: Path) -> dict[str, np.ndarray]:
    import torch

    src = upstream / "tessera_infer_QAT" / "src"
    _stub_unused_imports()
    modules = _load(src / "models" / "modules.py", "upstream_modules")
    dataset = _load(src / "datasets" / "ssl_dataset.py", "upstream_ssl_dataset")
    processing = _load(src / "utils" / "data_processing.py", "upstream_data_processing")
    quant = _load(src / "models" / "quantization.py", "upstream_quantization")
    net = _upstream_v1_net(modules)
    _weights_into(net)
    tile = write_tile_npy(work / "tile_v1_0", golden_tile("exact40"))
    ds = dataset.SingleTileInferenceDataset(str(tile), min_valid_timesteps=0)
    h, w = ds.H, ds.W
    emb = np.zeros((h * w, V1_SMALL["latent_dim"]), np.float32)
    codes = np.zeros((h * w, V1_SMALL["latent_dim"]), np.int8)
    scales = np.zeros(h * w, np.float32)
    np.random.seed(0)  # the draws are 40 of 40 here, so the seed does not matter
    for k in range(len(ds)):
        s = ds[k]
        s2 = processing.sample_s2_batch(s["s2_bands"][None], s["s2_masks"][None],
                                        s["s2_doys"][None], ds.s2_band_mean, ds.s2_band_std, 40)
        s1 = processing.sample_s1_batch(s["s1_asc_bands"][None], s["s1_asc_doys"][None],
                                        s["s1_desc_bands"][None], s["s1_desc_doys"][None],
                                        ds.s1_band_mean, ds.s1_band_std, 40)
        with torch.no_grad():
            e = net.dim_reducer(torch.cat([net.s2_backbone(torch.from_numpy(s2)),
                                           net.s1_backbone(torch.from_numpy(s1))], dim=-1))[0]
            q, sc = quant.quantize_tensor_symmetric(e, bits=8)
        g = s["global_idx"]
        emb[g], codes[g], scales[g] = e.numpy(), q.numpy(), float(sc)
    return {"embedding": emb, "codes": codes, "scales": scales}


def _v11_config(source: str) -> dict:
    c = V11_SMALL
    return {"batch_size": 16, "num_workers": 0, "use_bf16": False, "apply_amp": False,
            "log_interval_steps": 1000, "data_source": source, "fusion_method": "concat",
            "latent_dim": c["latent_dim"], "representation_dim": c["representation_dim"],
            "save_embedding_dim": 128, "s2_num_heads": c["heads"], "s2_num_layers": c["layers"],
            "s2_dim_feedforward": c["ffn"], "s1_num_heads": c["heads"],
            "s1_num_layers": c["layers"], "s1_dim_feedforward": c["ffn"],
            "use_s2": True, "use_s1": True, "split_s1_modalities": False,
            "disable_s1_ascending": False, "apply_qat_representation": True,
            "qat_representation_bits": 8, "num_obs_checkpoints": list(range(8, 257, 8))}


def v11_checkpoint(weights: dict[str, np.ndarray], path: Path) -> Path:
    """A checkpoint saved the way the v1.1 training saves them: under `model_state`, with
    torch.compile's `_orig_mod.` prefix and a projector that inference skips."""
    import torch
    state = {"_orig_mod." + k: torch.from_numpy(v) for k, v in weights.items()}
    state["_orig_mod.projector.net.0.weight"] = torch.zeros(4, 192)
    state["_orig_mod.segmented_matryoshka_projector.0.weight"] = torch.zeros(2, 2)
    torch.save({"model_state": state, "epoch": 3, "config": {"latent_dim": 8}}, path)
    return path


def make_tile_v11(upstream: Path, work: Path, source: str) -> dict[str, np.ndarray]:
    import torch

    src = upstream / "tessera_infer_QAT" / "src"
    sys.path.insert(0, str(src))
    try:
        from datasets.ssl_dataset_v1_1 import SingleTileInferenceDatasetV1_1
        from models.ssl_model_v1_1 import build_v1_1_inference_model
    finally:
        sys.path.remove(str(src))
    config = _v11_config(source)
    net = build_v1_1_inference_model(config, torch.device("cpu"))
    weights = _weights_into(net)
    tile = write_tile_npy(work / "tile_irregular", golden_tile("irregular"))
    ckpt = v11_checkpoint(weights, work / "v1_1.pt")
    cfg_file = work / f"v1_1_config_{source}.py"
    cfg_file.write_text(f"config = {config!r}\n")
    out = work / f"v1_1_{source}"
    subprocess.run([sys.executable, str(src / "infer_v1_1.py"), "--config", str(cfg_file),
                    "--checkpoint_path", str(ckpt), "--tile_path", str(tile), "--output_dir",
                    str(out), "--output_prefix", "t", "--device", "cpu"], check=True,
                   capture_output=True)
    codes = np.load(out / "t_emb128_int8.npy")
    scales = np.load(out / "t_emb128_scales.npy")
    # float embeddings from the same dataset and model, in process
    ds = SingleTileInferenceDatasetV1_1(str(tile), config)
    emb = np.zeros((ds.H * ds.W, 128), np.float32)
    with torch.no_grad():
        for idxs in ds.bins_to_indices.values():
            items = [ds[i] for i in idxs]
            e = net(torch.stack([b["s2"] for b in items]), torch.stack([b["s1"] for b in items]))
            emb[[b["global_idx"] for b in items]] = e[:, :128].numpy()
    return {"embedding": emb, "codes": codes.reshape(-1, 128), "scales": scales.reshape(-1)}


def make_tile_v2(upstream: Path, work: Path) -> dict[str, np.ndarray]:
    import torch

    student = upstream / "tessera_infer_v2" / "student"
    sys.path.insert(0, str(student))
    try:
        import infer as v2_infer  # noqa: F401  (the upstream module names)
        import model as v2_model
        import quantize as v2_quantize
    finally:
        sys.path.remove(str(student))
    a = V2_SMALL
    net = v2_model.PixelStudent(repr_dim=a["repr_dim"], latent_dim=a["latent_dim"],
                                num_layers=a["num_layers"], nhead=a["nhead"],
                                dim_feedforward=a["dim_feedforward"])
    weights = _weights_into(net)
    ckpt = work / "v2.pt"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}, "args": dict(a)},
               ckpt)
    loaded = v2_model.load_model(str(ckpt), torch.device("cpu"))
    t = golden_tile("irregular")
    emb = v2_infer.encode_tile(loaded, t["bands"], t["doys"], t["masks"], t["sar_ascending"],
                               t["sar_ascending_doy"], t["sar_descending"],
                               t["sar_descending_doy"], batch_pixels=16,
                               device=torch.device("cpu"))
    emb = emb.reshape(-1, 128)
    s2n, s1n = t["masks"].reshape(t["masks"].shape[0], -1).sum(0), None
    s1n = (np.any(t["sar_ascending"] != 0, -1).reshape(t["sar_ascending"].shape[0], -1).sum(0)
           + np.any(t["sar_descending"] != 0, -1).reshape(t["sar_descending"].shape[0], -1).sum(0))
    has_data = (s2n > 0) | (s1n > 0)  # upstream leaves the rest uninitialised (np.empty)
    emb[~has_data] = np.nan
    codes = {}
    for k in (16, 32, 64, 128):
        q, sc = v2_quantize.quantize(np.nan_to_num(emb[:, :k]))
        codes[f"codes{k}"], codes[f"scales{k}"] = q, sc
    return {"embedding": emb.astype(np.float32), **codes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True,
                    help="a checkout of github.com/ucam-eo/tessera (or an export of it)")
    ap.add_argument("--commit", default=None, help="its commit (default: git rev-parse HEAD)")
    args = ap.parse_args()
    commit = args.commit or subprocess.run(["git", "-C", str(args.upstream), "rev-parse", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()
    import tempfile

    up = "github.com/ucam-eo/tessera"
    np.savez_compressed(HERE / "v1_0.npz", **make_v1(args.upstream))
    info = json.loads((HERE / "golden.json").read_text()) if (HERE / "golden.json").exists() else {}
    info["v1_0"] = {"upstream": up, "commit": commit,
                    "code": ["tessera_infer_QAT/src/models/modules.py",
                             "tessera_infer_QAT/src/datasets/ssl_dataset.py"],
                    "model": V1_SMALL, "weights": "fixture_weights(seed=1000)"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.savez_compressed(HERE / "tile_v1_0.npz", **make_tile_v1(args.upstream, work))
        info["tile_v1_0"] = {
            "upstream": up, "commit": commit, "tile": "golden_tile('exact40')",
            "code": ["tessera_infer_QAT/src/datasets/ssl_dataset.py",
                     "tessera_infer_QAT/src/utils/data_processing.py",
                     "tessera_infer_QAT/src/models/modules.py",
                     "tessera_infer_QAT/src/models/quantization.py"],
            "model": V1_SMALL, "weights": "fixture_weights(seed=1000)"}
        for source in ("mpc", "aws"):
            np.savez_compressed(HERE / f"tile_v1_1_{source}.npz",
                                **make_tile_v11(args.upstream, work, source))
            info[f"tile_v1_1_{source}"] = {
                "upstream": up, "commit": commit, "tile": "golden_tile('irregular')",
                "code": ["tessera_infer_QAT/src/infer_v1_1.py (run as a script)",
                         "tessera_infer_QAT/src/datasets/ssl_dataset_v1_1.py",
                         "tessera_infer_QAT/src/models/ssl_model_v1_1.py"],
                "config": _v11_config(source), "weights": "fixture_weights(seed=1000)"}
        np.savez_compressed(HERE / "tile_v2.npz", **make_tile_v2(args.upstream, work))
        info["tile_v2"] = {
            "upstream": up, "commit": commit, "tile": "golden_tile('irregular')",
            "code": ["tessera_infer_v2/student/model.py (load_model)",
                     "tessera_infer_v2/student/infer.py (encode_tile)",
                     "tessera_infer_v2/student/quantize.py (quantize)"],
            "args": V2_SMALL, "weights": "fixture_weights(seed=1000)"}
    (HERE / "golden.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote the fixtures of {HERE} from upstream {commit}")


if __name__ == "__main__":
    main()
