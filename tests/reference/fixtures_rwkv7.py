#!/usr/bin/env python3
"""Test fixtures for the RWKV-7 engine (run by make_fixtures.py).

    fixtures_rwkv7.py --shared SHARED_DIR --out OUT_DIR

Writes only into OUT_DIR/rwkv7/:

  tiny-7v0-{fp32,fp16,bf16}.pth
      rwkv.cpp's tiny RWKV-7 test model (SHARED_DIR/models/rwkvcpp-tiny/
      tiny-rwkv-7v0-834K-{FP32,FP16}.bin) turned back into the official
      PyTorch layout: fp32 = every tensor float32; fp16 = the .bin's fp16
      tensors stay fp16, its fp32 ones float32; bf16 = every tensor bfloat16
      (rounded from the FP32 file), like the published G1 checkpoints.
  tiny-7v0-bin-reference-logits.npy
      rwkv7_reference.py's logits [3, 256] of the FP32 model after the bytes
      '"', 'i', 'n'; the last row is checked against rwkv.cpp's
      expected-logits-7v0-834K.bin.
  rand-v7-L4-C128-hs32-V512-bf16.pth   (+ .tokens.txt, .logits.npy)
  rand-v7-L3-C128-hs64-V1000-bf16.pth  (+ .tokens.txt, .logits.npy)
      Random-weight models in the official layout, all bfloat16; the logits
      [48, V] (float32) come from the float64 reference on the bf16 weights.
  rand-v7a-deepembed-L3-C128-hs32-V512-bf16.pth  (+ .tokens.txt, .logits.npy)
      the same for a DeepEmbed (RWKV-7a) model: every block's ffn also has
      s_emb.weight [V, 1024], s_emb_x.weight [1024, C], s1 [C, 32],
      s2 [32, F] and s0 [F]; the tokens repeat some ids.

Everything is deterministic (fixed seeds).
"""

import argparse
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rwkv7_reference as ref  # noqa: E402

# --- rwkv.cpp .bin -> official state dict --------------------------------------

BIN_MAGIC = 0x67676D66  # "ggmf"
BIN_TYPES = {0: np.float32, 1: np.float16}


def read_rwkvcpp_bin(path):
    """Parses an rwkv.cpp model file (docs/FILE_FORMAT.md of rwkv.cpp).

    Returns (header dict, [(name, torch-order shape, numpy array)]) in file
    order.  Only the unquantised FP32/FP16 variants are supported.
    """
    data = open(path, "rb").read()
    magic, version, n_vocab, n_embed, n_layer, data_type = struct.unpack_from("<6i", data, 0)
    if magic != BIN_MAGIC or version not in (100, 101):
        raise ValueError(f"{path}: not an rwkv.cpp model file")
    header = dict(version=version, n_vocab=n_vocab, n_embed=n_embed,
                  n_layer=n_layer, data_type=data_type)
    tensors, pos = [], 24
    while pos < len(data):
        n_dims, name_len, dtype = struct.unpack_from("<3i", data, pos)
        pos += 12
        ggml_shape = struct.unpack_from(f"<{n_dims}i", data, pos)
        pos += 4 * n_dims
        name = data[pos:pos + name_len].decode("utf-8")
        pos += name_len
        if dtype not in BIN_TYPES:
            raise ValueError(f"{path}: {name} has unsupported data type {dtype}")
        shape = tuple(reversed(ggml_shape))  # ggml lists dimensions innermost first
        count = int(np.prod(shape))
        arr = np.frombuffer(data, dtype=BIN_TYPES[dtype], count=count, offset=pos)
        pos += arr.nbytes
        tensors.append((name, shape, arr.reshape(shape).copy()))
    return header, tensors


MIX_NAMES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")  # order inside x_rwkvag
LORA_SUFFIXES = (".w1", ".w2", ".a1", ".a2", ".v1", ".v2", ".g1", ".g2")


def bin_to_official(tensors):
    """Undoes rwkv.cpp's converter: an official-layout {name: array}, in order."""
    out = {}
    for name, shape, arr in tensors:
        if name.endswith(".att.x_rwkvag"):
            # [6, 1, C]: the six token-shift mixes concatenated along dim 0.
            if shape[0] != 6:
                raise ValueError(f"{name}: unexpected shape {shape}")
            prefix = name[: -len("x_rwkvag")]
            for j, mix in enumerate(MIX_NAMES):
                out[prefix + mix] = arr[j].reshape(1, 1, -1)
        elif name.endswith(LORA_SUFFIXES):
            out[name] = np.ascontiguousarray(arr.T)  # stored transposed
        else:
            out[name] = arr  # r_k [H,N], [1,1,C] vectors, matrices: as stored
    return out


def save_pth(state_dict, path, dtype=None):
    """torch.save of {name: numpy array}; dtype=None keeps each array's own."""
    import torch
    sd = {}
    for name, arr in state_dict.items():
        t = torch.from_numpy(np.ascontiguousarray(arr))
        sd[name] = t.to(dtype) if dtype is not None else t.clone()
    torch.save(sd, path)
    return sd


def widen(torch_sd):
    """{name: torch tensor} -> {name: float64 numpy}, exactly."""
    import torch
    return {k: v.to(torch.float64).numpy() for k, v in torch_sd.items()}


# --- random models -----------------------------------------------------------------

def make_random_v7(seed, n_layer, n_embd, head_size, vocab_size,
                   d_decay, d_aaa, d_mv, d_gate, d_ffn=None, layer0_v=False,
                   deep_embed=0):
    """Random RWKV-7 weights, official names/shapes, float32 numpy.

    The scales aim at a well-conditioned network in which every part shows in
    the logits: the residual stream stays O(1), mixes are spread over [0, 1],
    decays span slow to fast, and some embedding rows and some heads are
    small enough that the LayerNorm / GroupNorm epsilons matter.
    Key order follows the published G1 checkpoints (x_*, w0, r_k, w1, w2, a1,
    a2, a0, g1, g2, v2, v1, v0, k_k, k_a, receptance, key, value, output, ln_x).
    """
    C, N = n_embd, head_size
    H = C // N
    F = d_ffn or 4 * C
    rng = np.random.default_rng(seed)

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(shape, lo, hi):
        return rng.uniform(lo, hi, shape).astype(np.float32)

    def near_one(shape, spread=0.1):
        return (1.0 + rng.standard_normal(shape) * spread).astype(np.float32)

    vec = (1, 1, C)
    sd = {}
    # Embedding rows with log-uniform scale 0.002 .. 0.2: ln0's eps matters
    # for the small ones.
    row_scale = np.exp(rng.uniform(np.log(0.002), np.log(0.2), (vocab_size, 1)))
    sd["emb.weight"] = (rng.standard_normal((vocab_size, C)) * row_scale).astype(np.float32)
    sd["blocks.0.ln0.weight"] = near_one(C)
    sd["blocks.0.ln0.bias"] = normal(C, 0.1)
    for i in range(n_layer):
        b, att, ffn = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        sd[b + "ln1.weight"] = near_one(C)
        sd[b + "ln1.bias"] = normal(C, 0.1)
        sd[b + "ln2.weight"] = near_one(C)
        sd[b + "ln2.bias"] = normal(C, 0.1)
        for mix in MIX_NAMES:
            sd[att + mix] = uniform(vec, 0.0, 1.0)
        sd[att + "w0"] = uniform(vec, -6.0, 0.0)           # decays ~0.55 .. 0.999
        sd[att + "r_k"] = normal((H, N), 0.1)
        sd[att + "w1"] = normal((C, d_decay), C ** -0.5)
        sd[att + "w2"] = normal((d_decay, C), 0.7 * d_decay ** -0.5)
        sd[att + "a1"] = normal((C, d_aaa), C ** -0.5)
        sd[att + "a2"] = normal((d_aaa, C), d_aaa ** -0.5)
        sd[att + "a0"] = normal(vec, 0.5)
        sd[att + "g1"] = normal((C, d_gate), C ** -0.5)
        sd[att + "g2"] = normal((d_gate, C), 1.5 * d_gate ** -0.5)
        if i > 0 or layer0_v:
            sd[att + "v2"] = normal((d_mv, C), d_mv ** -0.5)
            sd[att + "v1"] = normal((C, d_mv), C ** -0.5)
            sd[att + "v0"] = normal(vec, 0.5)
        sd[att + "k_k"] = uniform(vec, 0.7, 1.0)
        sd[att + "k_a"] = uniform(vec, 0.8, 1.2)
        # Receptance rows scaled per head, 1e-3 .. 1: the wkv read-out of the
        # quiet heads is comparable to the GroupNorm eps.
        head_scale = np.exp(rng.uniform(np.log(1e-3), 0.0, H)).repeat(N)[:, None]
        sd[att + "receptance.weight"] = (normal((C, C), C ** -0.5) * head_scale).astype(np.float32)
        sd[att + "key.weight"] = normal((C, C), C ** -0.5)
        sd[att + "value.weight"] = normal((C, C), C ** -0.5)
        sd[att + "output.weight"] = normal((C, C), 0.5 * C ** -0.5)
        sd[att + "ln_x.weight"] = near_one(C)
        sd[att + "ln_x.bias"] = normal(C, 0.1)
        sd[ffn + "x_k"] = uniform(vec, 0.0, 1.0)
        sd[ffn + "key.weight"] = normal((F, C), C ** -0.5)
        sd[ffn + "value.weight"] = normal((C, F), 0.4 * F ** -0.5)
        if deep_embed:
            # DeepEmbed: the token's D x D matrix has entries of about
            # D^-0.5 (half table, half linear in ln0(emb)), so the gate
            # ((x s1) M) s2 + s0 is about 1 +- 0.3 per hidden unit.
            D = deep_embed
            sd[ffn + "s_emb.weight"] = normal((vocab_size, D * D), 0.12)
            sd[ffn + "s_emb_x.weight"] = normal((D * D, C), 0.12 * C ** -0.5)
            sd[ffn + "s1"] = normal((C, D), C ** -0.5)
            sd[ffn + "s2"] = normal((D, F), 0.3 * D ** -0.5)
            sd[ffn + "s0"] = near_one(F)
    sd["ln_out.weight"] = near_one(C)
    sd["ln_out.bias"] = normal(C, 0.1)
    sd["head.weight"] = normal((vocab_size, C), 2.0 * C ** -0.5)
    return sd


RANDOM_MODELS = [
    # name, seed, make_random_v7 arguments
    ("rand-v7-L4-C128-hs32-V512-bf16", 7401,
     dict(n_layer=4, n_embd=128, head_size=32, vocab_size=512,
          d_decay=16, d_aaa=16, d_mv=8, d_gate=32, layer0_v=True)),
    ("rand-v7-L3-C128-hs64-V1000-bf16", 7402,
     dict(n_layer=3, n_embd=128, head_size=64, vocab_size=1000,
          d_decay=8, d_aaa=8, d_mv=8, d_gate=16, layer0_v=False)),
    ("rand-v7a-deepembed-L3-C128-hs32-V512-bf16", 7403,
     dict(n_layer=3, n_embd=128, head_size=32, vocab_size=512,
          d_decay=16, d_aaa=16, d_mv=8, d_gate=32, layer0_v=False, deep_embed=32)),
]
N_TOKENS = 48

TINY_TOKENS = [ord('"'), ord("i"), ord("n")]  # 34, 105, 110
TINY_TOLERANCE = 1e-3


def main():
    ap = argparse.ArgumentParser(description="RWKV-7 test fixtures")
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    args, _unknown = ap.parse_known_args()

    import torch
    torch.manual_seed(0)
    out_dir = os.path.join(args.out, "rwkv7")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    written = []

    def path(name):
        written.append(name)
        return os.path.join(out_dir, name)

    # (a) rwkv.cpp's tiny model, back in the official layout.
    tiny_dir = os.path.join(args.shared, "models", "rwkvcpp-tiny")
    _, fp32_tensors = read_rwkvcpp_bin(os.path.join(tiny_dir, "tiny-rwkv-7v0-834K-FP32.bin"))
    _, fp16_tensors = read_rwkvcpp_bin(os.path.join(tiny_dir, "tiny-rwkv-7v0-834K-FP16.bin"))
    tiny32 = bin_to_official(fp32_tensors)
    tiny16 = bin_to_official(fp16_tensors)
    assert all(a.dtype == np.float32 for a in tiny32.values())
    save_pth(tiny32, path("tiny-7v0-fp32.pth"))
    save_pth(tiny16, path("tiny-7v0-fp16.pth"))
    save_pth(tiny32, path("tiny-7v0-bf16.pth"), dtype=torch.bfloat16)

    logits = ref.forward({k: v.astype(np.float64) for k, v in tiny32.items()}, TINY_TOKENS)
    np.save(path("tiny-7v0-bin-reference-logits.npy"), logits.astype(np.float32))
    expected = np.fromfile(os.path.join(tiny_dir, "expected-logits-7v0-834K.bin"), dtype="<f4")
    assert expected.shape == (256,), expected.shape
    err = float(np.abs(logits[-1] - expected).max())
    print(f"tiny 7v0 FP32: reference vs rwkv.cpp expected logits: max abs error {err:.3g} "
          f"(logit std {expected.std():.3g})")
    assert err < TINY_TOLERANCE, f"reference disagrees with rwkv.cpp's expected logits: {err}"

    # (b) random models, bf16, with tokens and reference logits.
    for name, seed, kw in RANDOM_MODELS:
        sd32 = make_random_v7(seed, **kw)
        sd_bf16 = save_pth(sd32, path(name + ".pth"), dtype=torch.bfloat16)
        rng = np.random.default_rng(seed + 1000)
        tokens = rng.integers(0, kw["vocab_size"], N_TOKENS).tolist()
        if kw.get("deep_embed"):  # repeated ids: the per-token tables are read again
            tokens[20:26] = tokens[2:8]
        with open(path(name + ".tokens.txt"), "w") as f:
            f.write(",".join(str(t) for t in tokens) + "\n")
        logits = ref.forward(widen(sd_bf16), tokens)
        np.save(path(name + ".logits.npy"), logits.astype(np.float32))
        print(f"{name}: logits [{len(tokens)}, {kw['vocab_size']}], "
              f"std {logits.std():.3g}, max |logit| {np.abs(logits).max():.3g}")

    for name in written:
        print(f"wrote {os.path.join(out_dir, name)}")
    print(f"rwkv7 fixtures done in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
