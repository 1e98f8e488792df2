#!/usr/bin/env python3
"""Test fixtures for RWKV-4, 5.x and 6 (run by make_fixtures.py).

    fixtures_versions.py --shared SHARED_DIR --out OUT_DIR

Writes only into OUT_DIR/versions/, deterministically:

  tiny-{4v0,5v1,5v2}-{fp32,fp16}.pth
      rwkv.cpp's tiny test models (SHARED_DIR/models/rwkvcpp-tiny/
      tiny-rwkv-{4v0-660K,5v1-730K,5v2-730K}-{FP32,FP16}.bin) turned back
      into the official layout, its pre-transforms undone (see
      bin_to_official).  rwkv.cpp's "5v1" is the official 5.0 layout, its
      "5v2" is 5.2.  fp16 keeps the .bin's mix of fp16 and fp32 tensors.
  tiny.tokens.txt
      48 byte tokens, starting with the bytes '"', 'i', 'n' of rwkv.cpp's
      expected logits (which are the logits at position 2).
  tiny-<v>-<type>.logits.npy
      the float64 reference's logits [48, 256] (float32) on that .pth, with
      the official GroupNorm epsilon for 5.x.
  tiny-{5v1,5v2}-<type>.rwkvcpp-eps.logits.npy
      the same with rwkv.cpp's RWKV-5 GroupNorm epsilon, 1e-5.
  rand-<version>-....pth  (+ .tokens.txt, .logits.npy)
      random-weight models in the official layout, every tensor bfloat16, with
      48 tokens and the reference's logits [48, V] on the bf16 weights.
  rand-<version>-....bin
      the same weights in rwkv.cpp's layout (FP32), written the way rwkv.cpp's
      converter writes them (see official_to_bin).

The script checks its references against rwkv.cpp's expected logits before
writing anything the tests rely on.

How the references were verified (scripts kept outside the repository, in
/work/verify/, official code run read-only): ChatRWKV's rwkv/model.py
(RWKV_JIT_ON=0, RWKV_CUDA_ON=0, 'cpu fp32', token by token and
forward(full_output=True); only edit: torch 1.13 lacks torch.load(mmap=),
dropped at run time) and, for v4, RWKV-LM RWKV-v4neo/src/model_run.py, on
every .pth written here. Worst max abs error / logit std over all positions:
1.6e-6 to 6.1e-6 (random v4, 5.0, 5.1, 5.2, 6 and the tiny 4v0/5v1/5v2),
i.e. float32 rounding. ChatRWKV folds ln0 into the embedding in the file's
dtype, so on the bf16 files themselves it is off by 0.011 to 0.035 std; the
comparison uses the same weights saved as float32. Typical bugs (LayerNorm eps
1e-6, 5.x/6 GroupNorm eps 1e-5, token shift reversed, gate without silu, v6
LoRA parts reordered, v4 decay sign) move the logits by 0.43 to 3.3 std.
The .bin files here equal what rwkv.cpp's convert_pytorch_to_ggml.py writes
from the .pth (names, order, shapes, types; values bit-identical except the
decays/bonuses it transforms in float32, within 7e-8 relative).
"""

import argparse
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rwkv4_reference as ref4  # noqa: E402
import rwkv5_reference as ref5  # noqa: E402
import rwkv6_reference as ref6  # noqa: E402

RWKVCPP_V5_GN_EPS = 1e-5    # rwkv.cpp's RWKV-5 ln_x epsilon (official: 64e-5)
EXPECTED_TOLERANCE = 1e-4   # reference vs rwkv.cpp's expected logits (measured 1.5e-6 .. 3.1e-6)
N_TOKENS = 48

# --- rwkv.cpp files ------------------------------------------------------------------

BIN_MAGIC = 0x67676D66
BIN_TYPES = {0: np.float32, 1: np.float16}


def read_bin(path):
    """rwkv.cpp model file (docs/FILE_FORMAT.md) -> [(name, torch-order shape, array)]."""
    data = open(path, "rb").read()
    magic, version = struct.unpack_from("<2i", data, 0)
    if magic != BIN_MAGIC or version not in (100, 101):
        raise ValueError(f"{path}: not an rwkv.cpp model file")
    tensors, pos = [], 24
    while pos < len(data):
        n_dims, name_len, dtype = struct.unpack_from("<3i", data, pos)
        pos += 12
        dims = struct.unpack_from(f"<{n_dims}i", data, pos)
        pos += 4 * n_dims
        name = data[pos:pos + name_len].decode()
        pos += name_len
        shape = tuple(reversed(dims))  # stored innermost first
        arr = np.frombuffer(data, BIN_TYPES[dtype], int(np.prod(shape)), pos).reshape(shape).copy()
        pos += arr.nbytes
        tensors.append((name, shape, arr))
    return tensors


def write_bin(path, tensors, n_vocab, n_embd, n_layer):
    """[(name, float32 array)] -> an FP32 rwkv.cpp file (format version 101)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<6i", BIN_MAGIC, 101, n_vocab, n_embd, n_layer, 0))
        for name, arr in tensors:
            arr = np.ascontiguousarray(arr, dtype="<f4")
            key = name.encode()
            f.write(struct.pack("<3i", arr.ndim, len(key), 0))
            f.write(struct.pack(f"<{arr.ndim}i", *reversed(arr.shape)))
            f.write(key)
            f.write(arr.tobytes())


def bin_to_official(tensors, version):
    """Undoes rwkv.cpp's converter for a v4 / 5.0 ("5v1") / 5.2 ("5v2") file.

    The converter squeezed every time_* tensor and stored the decay as
    -exp(time_decay) (v4) or exp(-exp(time_decay)) (v5), 5.0's time_first as
    exp(time_first), and gave v5's decay/bonus a trailing axis of 1.  The
    inverse transforms run in float64; the result keeps each tensor's dtype.
    """
    out = {}
    for name, shape, arr in tensors:
        a = arr
        if name.endswith("att.time_decay"):
            w = arr.astype(np.float64)
            if version == "4":
                a = np.log(-w)                         # official [C]
            elif version == "5.0":
                a = np.log(-np.log(w)).reshape(-1)     # [H, 1, 1] -> [H]
            else:
                a = np.log(-np.log(w)).reshape(shape[:2])  # [H, N, 1] -> [H, N]
            a = a.astype(arr.dtype)
        elif name.endswith("att.time_first") and version != "4":
            a = np.log(arr.astype(np.float64)).reshape(-1).astype(arr.dtype)  # [H, 1, 1] -> [H]
        elif name.endswith("att.time_faaaa"):
            a = arr.reshape(shape[:2])                 # [H, N, 1] -> [H, N]
        elif ".time_mix_" in name:
            a = arr.reshape(1, 1, -1)                  # squeezed [C] -> official [1, 1, C]
        out[name] = np.ascontiguousarray(a)
    return out


def official_to_bin(weights, version):
    """What rwkv.cpp's converter writes for an official state dict, as float32.

    Every time_* tensor squeezed, then
      4:    time_decay -> -exp(time_decay)
      5.x:  time_decay -> exp(-exp(time_decay)), as [H, 1, 1] (5.0, no gate),
            [H, 1] (5.1) or [H, N, 1] (5.2); time_first -> exp(time_first) as
            [H, 1, 1]; time_faaaa as [H, N, 1]
      6:    time_maa_w1 and time_decay_w1/w2 transposed, time_maa_w2's last
            two axes swapped, time_decay and time_faaaa as [H, N, 1].
    (rwkv.cpp itself runs only the 4, 5.0 and 5.2 results; the engine reads all.)
    """
    H = next(np.shape(v)[0] for k, v in weights.items()
             if k.endswith("att.time_faaaa" if version == "6" else "att.time_decay"))
    out = []
    for name, arr in weights.items():
        a = np.asarray(arr, dtype=np.float64)
        if ".time_" in name:
            a = a.squeeze()
        if version == "4":
            if name.endswith("att.time_decay"):
                a = -np.exp(a)
        elif version == "6":
            if name.endswith(("time_maa_w1", "time_decay_w1", "time_decay_w2")):
                a = a.T
            elif name.endswith("time_maa_w2"):
                a = a.transpose(0, 2, 1)
            elif name.endswith(("att.time_decay", "att.time_faaaa")):
                a = a.reshape(H, -1, 1)
        else:
            if name.endswith("att.time_decay"):
                a = np.exp(-np.exp(a))
                a = a.reshape(-1, 1, 1) if version == "5.0" else a[..., None]
            elif name.endswith("att.time_first"):
                a = np.exp(a).reshape(-1, 1, 1)
            elif name.endswith("att.time_faaaa"):
                a = a[..., None]
        out.append((name, a.astype(np.float32)))
    return out


# --- .pth --------------------------------------------------------------------------------

def save_pth(weights, path, dtype=None):
    """torch.save of {name: array}; dtype None keeps each array's own."""
    import torch
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)).clone() for k, v in weights.items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    torch.save(sd, path)
    return sd


def widen(sd):
    """{name: torch tensor} -> {name: float64 array}, exactly."""
    import torch
    return {k: v.to(torch.float64).numpy() for k, v in sd.items()}


# --- random models ---------------------------------------------------------------------

class Maker:
    """Random weights, official names and shapes, float32.

    Scaled so that the network is well conditioned and every part shows in
    the logits: the residual stream stays O(1), mixes spread over [0, 1],
    decays span slow to fast, RWKV-4 keys are large enough (std ~3) for the
    running-maximum form to matter, and the receptance is scaled per head
    (1e-3 .. 1) so that some heads' read-out is comparable to the GroupNorm
    epsilon.
    """

    def __init__(self, seed, n_layer, n_embd, vocab, d_ffn=None):
        self.rng = np.random.default_rng(seed)
        self.L, self.C, self.V = n_layer, n_embd, vocab
        self.F = d_ffn or 4 * n_embd
        self.sd = {}

    def normal(self, shape, std):
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(self, shape, lo, hi):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    def near_one(self, n):
        return (1.0 + self.rng.standard_normal(n) * 0.1).astype(np.float32)

    def ln(self, name):
        self.sd[name + ".weight"] = self.near_one(self.C)
        self.sd[name + ".bias"] = self.normal(self.C, 0.1)

    def head_scaled(self, n_head):
        C = self.C
        scale = np.exp(self.rng.uniform(np.log(1e-3), 0.0, n_head)).repeat(C // n_head)[:, None]
        return (self.normal((C, C), C ** -0.5) * scale).astype(np.float32)

    def begin(self):
        C = self.C
        row_scale = np.exp(self.rng.uniform(np.log(0.002), np.log(0.2), (self.V, 1)))
        self.sd["emb.weight"] = (self.rng.standard_normal((self.V, C)) * row_scale).astype(np.float32)
        self.ln("blocks.0.ln0")

    def block_norms(self, i):
        self.ln(f"blocks.{i}.ln1")
        self.ln(f"blocks.{i}.ln2")

    def ffn(self, i, v6):
        C, F, p = self.C, self.F, f"blocks.{i}.ffn."
        for m in ("k", "r"):
            self.sd[p + ("time_maa_" if v6 else "time_mix_") + m] = self.uniform((1, 1, C), 0.0, 1.0)
        self.sd[p + "key.weight"] = self.normal((F, C), C ** -0.5)
        self.sd[p + "receptance.weight"] = self.normal((C, C), C ** -0.5)
        self.sd[p + "value.weight"] = self.normal((C, F), 0.5 * F ** -0.5)

    def end(self):
        self.ln("ln_out")
        self.sd["head.weight"] = self.normal((self.V, self.C), 2.0 * self.C ** -0.5)
        return self.sd


def make_v4(seed, n_layer, n_embd, vocab, d_ffn=None):
    m = Maker(seed, n_layer, n_embd, vocab, d_ffn)
    C = n_embd
    m.begin()
    for i in range(n_layer):
        att = f"blocks.{i}.att."
        m.block_norms(i)
        m.sd[att + "time_decay"] = m.uniform(C, -4.0, 2.0)    # w = -exp(.) in [-7.4, -0.02]
        m.sd[att + "time_first"] = m.uniform(C, -1.0, 1.0)
        for x in ("k", "v", "r"):
            m.sd[att + "time_mix_" + x] = m.uniform((1, 1, C), 0.0, 1.0)
        m.sd[att + "key.weight"] = m.normal((C, C), 3.0 * C ** -0.5)
        m.sd[att + "value.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "receptance.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "output.weight"] = m.normal((C, C), 0.5 * C ** -0.5)
        m.ffn(i, v6=False)
    return m.end()


def make_v5(seed, version, n_layer, n_embd, head_size, vocab, d_ffn=None):
    m = Maker(seed, n_layer, n_embd, vocab, d_ffn)
    C, N = n_embd, head_size
    H = C // N
    m.begin()
    for i in range(n_layer):
        att = f"blocks.{i}.att."
        m.block_norms(i)
        for x in ("k", "v", "r") + (("g",) if version != "5.0" else ()):
            m.sd[att + "time_mix_" + x] = m.uniform((1, 1, C), 0.0, 1.0)
        if version == "5.2":
            m.sd[att + "time_decay"] = m.uniform((H, N), -6.0, 0.5)   # w = exp(-exp(.)) in [0.19, 0.9975]
            m.sd[att + "time_faaaa"] = m.uniform((H, N), -0.5, 1.0)
        else:
            m.sd[att + "time_decay"] = m.uniform(H, -5.0, 0.5)
            m.sd[att + "time_first"] = m.uniform(H, -1.0, 0.5)        # u = exp(.)
        m.sd[att + "receptance.weight"] = m.head_scaled(H)
        m.sd[att + "key.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "value.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "output.weight"] = m.normal((C, C), 0.5 * C ** -0.5)
        if version != "5.0":
            m.sd[att + "gate.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "ln_x.weight"] = m.near_one(C)
        m.sd[att + "ln_x.bias"] = m.normal(C, 0.1)
        m.ffn(i, v6=False)
    return m.end()


def make_v6(seed, n_layer, n_embd, head_size, vocab, d_mix, d_decay, d_ffn=None):
    m = Maker(seed, n_layer, n_embd, vocab, d_ffn)
    C, N = n_embd, head_size
    H = C // N
    m.begin()
    for i in range(n_layer):
        att = f"blocks.{i}.att."
        m.block_norms(i)
        for x in ("x", "w", "k", "v", "r", "g"):
            m.sd[att + "time_maa_" + x] = m.uniform((1, 1, C), 0.0, 1.0)
        m.sd[att + "time_maa_w1"] = m.normal((C, 5 * d_mix), C ** -0.5)
        m.sd[att + "time_maa_w2"] = m.normal((5, d_mix, C), 0.5 * d_mix ** -0.5)
        m.sd[att + "time_decay"] = m.uniform((1, 1, C), -6.0, 0.5)
        m.sd[att + "time_decay_w1"] = m.normal((C, d_decay), C ** -0.5)
        m.sd[att + "time_decay_w2"] = m.normal((d_decay, C), 0.7 * d_decay ** -0.5)
        m.sd[att + "time_faaaa"] = m.uniform((H, N), -0.5, 1.0)
        m.sd[att + "receptance.weight"] = m.head_scaled(H)
        m.sd[att + "key.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "value.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "output.weight"] = m.normal((C, C), 0.5 * C ** -0.5)
        m.sd[att + "gate.weight"] = m.normal((C, C), C ** -0.5)
        m.sd[att + "ln_x.weight"] = m.near_one(C)
        m.sd[att + "ln_x.bias"] = m.normal(C, 0.1)
        m.ffn(i, v6=True)
    return m.end()


# name, seed, reference module, maker, arguments, version (for official_to_bin)
RANDOM_MODELS = [
    ("rand-v4-L3-C96-V300-bf16", 4401, ref4, make_v4,
     dict(n_layer=3, n_embd=96, vocab=300, d_ffn=336), "4"),
    ("rand-v5.0-L2-C64-hs16-V256-bf16", 5001, ref5, make_v5,
     dict(version="5.0", n_layer=2, n_embd=64, head_size=16, vocab=256), "5.0"),
    ("rand-v5.1-L3-C128-hs32-V512-bf16", 5101, ref5, make_v5,
     dict(version="5.1", n_layer=3, n_embd=128, head_size=32, vocab=512), "5.1"),
    ("rand-v5.2-L2-C128-hs64-V400-bf16", 5201, ref5, make_v5,
     dict(version="5.2", n_layer=2, n_embd=128, head_size=64, vocab=400), "5.2"),
    ("rand-v6-L3-C128-hs32-V512-bf16", 6001, ref6, make_v6,
     dict(n_layer=3, n_embd=128, head_size=32, vocab=512, d_mix=8, d_decay=16), "6"),
    ("rand-v6-L2-C128-hs64-V1000-bf16", 6002, ref6, make_v6,
     dict(n_layer=2, n_embd=128, head_size=64, vocab=1000, d_mix=32, d_decay=64), "6"),
]

TINY_MODELS = [("4v0", "4v0-660K", "4"), ("5v1", "5v1-730K", "5.0"), ("5v2", "5v2-730K", "5.2")]
TINY_TEXT = b'"in the beginning the model read forty-eight bytes'[:N_TOKENS]


def main():
    ap = argparse.ArgumentParser(description="RWKV-4/5/6 test fixtures")
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    args, _unknown = ap.parse_known_args()

    import torch
    out_dir = os.path.join(args.out, "versions")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    written = []

    def path(name):
        written.append(name)
        return os.path.join(out_dir, name)

    # (a) rwkv.cpp's tiny models back in the official layout, with reference logits.
    tiny_dir = os.path.join(args.shared, "models", "rwkvcpp-tiny")
    tokens = list(TINY_TEXT)
    assert len(tokens) == N_TOKENS and tokens[:3] == [34, 105, 110]
    with open(path("tiny.tokens.txt"), "w") as f:
        f.write(",".join(map(str, tokens)) + "\n")
    for short, long_name, version in TINY_MODELS:
        expected = np.fromfile(os.path.join(tiny_dir, f"expected-logits-{long_name}.bin"), dtype="<f4")
        ref = ref4 if version == "4" else ref5
        for kind in ("FP32", "FP16"):
            tensors = read_bin(os.path.join(tiny_dir, f"tiny-rwkv-{long_name}-{kind}.bin"))
            base = f"tiny-{short}-{kind.lower()}"
            weights = widen(save_pth(bin_to_official(tensors, version), path(base + ".pth")))
            logits = ref.forward(weights, tokens)
            np.save(path(base + ".logits.npy"), logits.astype(np.float32))
            rwkvcpp_logits = logits
            if version != "4":
                rwkvcpp_logits = ref.forward(weights, tokens, gn_eps=RWKVCPP_V5_GN_EPS)
                np.save(path(base + ".rwkvcpp-eps.logits.npy"), rwkvcpp_logits.astype(np.float32))
            err = float(np.abs(rwkvcpp_logits[2] - expected).max())
            note = f"official eps moves them by {np.abs(logits[2] - expected).max():.3g}" if version != "4" else ""
            print(f"tiny {short} {kind}: reference vs rwkv.cpp expected logits {err:.3g} {note}")
            if kind == "FP32":
                assert err < EXPECTED_TOLERANCE, f"{base}: reference disagrees with rwkv.cpp: {err}"

    # (b) random models, bf16, with tokens and reference logits.
    for name, seed, ref, maker, kw, version in RANDOM_MODELS:
        sd = save_pth(maker(seed, **kw), path(name + ".pth"), dtype=torch.bfloat16)
        weights = widen(sd)
        rng = np.random.default_rng(seed + 1000)
        tokens = rng.integers(0, kw["vocab"], N_TOKENS).tolist()
        with open(path(name + ".tokens.txt"), "w") as f:
            f.write(",".join(map(str, tokens)) + "\n")
        logits = ref.forward(weights, tokens)
        np.save(path(name + ".logits.npy"), logits.astype(np.float32))
        print(f"{name}: logits {logits.shape}, std {logits.std():.3g}, max |logit| {np.abs(logits).max():.3g}")
        write_bin(path(name + ".bin"), official_to_bin(weights, version),
                  kw["vocab"], kw["n_embd"], kw["n_layer"])

    for name in written:
        print(f"wrote {os.path.join(out_dir, name)}")
    print(f"versions fixtures done in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
