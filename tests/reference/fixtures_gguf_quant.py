#!/usr/bin/env python3
"""Block-quantized GGUF fixtures (run by make_fixtures.py).

    fixtures_gguf_quant.py --shared SHARED_DIR --out OUT_DIR

Writes only into OUT_DIR/gguf-quant/, deterministically, for each ggml type
T of q8_0, q4_0, q4_1, q5_0, q5_1:

  rand-v7-T.gguf
      SHARED_DIR/models/llamacpp-gguf/rand-v7-L2-C64-hs64-V65536-bf16.gguf
      (written by llama.cpp's own converter) with the tensors that
      llama-quantize quantizes (llama-quant.cpp, tensor_allows_quantization:
      2-D '*weight' tensors except norms and RWKV's small LoRA / lerp / first
      tensors, i.e. token_embd, output, time_mix_{receptance,key,value,output},
      channel_mix_{key,value}) quantized to T; everything else, the metadata
      included, as in the source (general.file_type set to llama.cpp's ftype).
  rand-v6-T.gguf
      the same for the random RWKV-6 of fixtures_formats.py (llama.cpp's
      rwkv6 layout, rescale_every_n_layers = 2, so time_mix_output and
      channel_mix_value are stored divided by 2^(layer // 2) and quantized
      that way; also time_mix_gate and channel_mix_receptance quantized).
  rand-v{6,7}.tokens.txt, rand-v{6,7}-T.logits.npy
      tokens, and the float64 reference's logits [T, V] (float32) of the
      dequantized-float model: the official weights (the shared .pth / the
      RWKV-6 state dict) with every quantized matrix replaced by the values
      its blocks decode to here (times 2^(layer // 2) where the converter had
      divided), so the engine's quantized kernels are checked against an
      independent decoding of the blocks.

The quantizers follow ggml's reference ones (quantize_row_*_ref); decoding
follows the block layouts (d f16 [, m f16] [, qh u32], quants).
"""
import argparse
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixtures_formats as ff  # noqa: E402
import fixtures_versions as fv  # noqa: E402
import rwkv6_reference as ref6  # noqa: E402
import rwkv7_reference as ref7  # noqa: E402

# ggml type ids and llama.cpp's matching general.file_type (llama_ftype).
TYPES = {"q8_0": (8, 7), "q4_0": (2, 2), "q4_1": (3, 3), "q5_0": (6, 8), "q5_1": (7, 9)}
QK = 32

# --- ggml block quantization ------------------------------------------------------------


def _round_away(x):
    """C's roundf: halves away from zero."""
    return np.trunc(x + np.copysign(0.5, x))


def _f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def _pack_nibbles(q):
    """[n, 32] values 0..31 -> qs [n, 16] (low nibbles: q[j] | q[j+16] << 4) and qh [n] (bit j = bit 4 of q[j])."""
    q = q.astype(np.uint32)
    qs = ((q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)).astype(np.uint8)
    qh = (((q >> 4) & 1) << np.arange(32, dtype=np.uint32)).sum(axis=1).astype("<u4")
    return qs, qh


def quantize(x, kind):
    """float32 [rows, cols] (cols % 32 == 0) -> block bytes, as ggml writes them."""
    b = np.asarray(x, dtype=np.float32).reshape(-1, QK)
    n = b.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "q8_0":
            d = np.abs(b).max(axis=1) / 127
            idv = np.where(d != 0, 1 / d, 0).astype(np.float32)
            q = _round_away(b * idv[:, None]).astype(np.int8)
            out = np.zeros(n, dtype=[("d", "<f2"), ("q", "i1", 32)])
            out["d"], out["q"] = _f16(d), q
        elif kind in ("q4_0", "q5_0"):
            levels = 8 if kind == "q4_0" else 16
            signed_max = b[np.arange(n), np.abs(b).argmax(axis=1)]  # the value of largest magnitude
            d = signed_max / -levels
            idv = np.where(d != 0, 1 / d, 0).astype(np.float32)
            q = np.minimum(2 * levels - 1, np.trunc(b * idv[:, None] + (levels + 0.5))).astype(np.uint8)
            qs, qh = _pack_nibbles(q)
            if kind == "q4_0":
                out = np.zeros(n, dtype=[("d", "<f2"), ("qs", "u1", 16)])
            else:
                out = np.zeros(n, dtype=[("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
                out["qh"] = qh
            out["d"], out["qs"] = _f16(d), qs
        else:  # q4_1, q5_1
            levels = 15 if kind == "q4_1" else 31
            lo, hi = b.min(axis=1), b.max(axis=1)
            d = (hi - lo) / levels
            idv = np.where(d != 0, 1 / d, 0).astype(np.float32)
            q = np.minimum(levels, np.trunc((b - lo[:, None]) * idv[:, None] + 0.5)).astype(np.uint8)
            qs, qh = _pack_nibbles(q)
            if kind == "q4_1":
                out = np.zeros(n, dtype=[("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])
            else:
                out = np.zeros(n, dtype=[("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
                out["qh"] = qh
            out["d"], out["m"], out["qs"] = _f16(d), _f16(lo), qs
    return out.tobytes()


BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24}


def dequantize(data, kind, shape):
    """Block bytes -> float64 values [shape], decoded from the layout alone."""
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, BLOCK_BYTES[kind])
    d = raw[:, 0:2].copy().view("<f2")[:, 0].astype(np.float64)[:, None]
    if kind == "q8_0":
        vals = d * raw[:, 2:].view(np.int8).astype(np.float64)
    else:
        has_m = kind in ("q4_1", "q5_1")
        m = raw[:, 2:4].copy().view("<f2")[:, 0].astype(np.float64)[:, None] if has_m else 0.0
        at = 4 if has_m else 2
        if kind.startswith("q5"):
            qh = raw[:, at:at + 4].copy().view("<u4")[:, 0]
            at += 4
        qs = raw[:, at:at + 16].astype(np.int64)
        q = np.concatenate([qs & 15, qs >> 4], axis=1)
        if kind.startswith("q5"):
            q = q | ((((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int64)) << 4)
        offset = {"q4_0": 8, "q5_0": 16}.get(kind, 0)
        vals = d * (q - offset) + m
    return vals.reshape(shape)


# --- GGUF reading and writing ---------------------------------------------------------------

GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30


def _skip_value(data, pos, typ):
    if typ == 8:  # string
        (n,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + n
    if typ == 9:  # array
        elem, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        for _ in range(count):
            pos = _skip_value(data, pos, elem)
        return pos
    return pos + GGUF_SIZES[typ]


def read_gguf(path):
    """-> (metadata [(key, type, raw value bytes)], tensors [(name, ne, ggml type, bytes)], alignment)."""
    data = open(path, "rb").read()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    assert magic == b"GGUF" and version == 3, path
    pos, kv, alignment = 24, [], 32
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (typ,) = struct.unpack_from("<I", data, pos)
        pos += 4
        end = _skip_value(data, pos, typ)
        kv.append((key, typ, data[pos:end]))
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", data, pos)
        pos = end
    infos = []
    for _ in range(n_tensors):
        (n,) = struct.unpack_from("<Q", data, pos)
        name = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (n_dims,) = struct.unpack_from("<I", data, pos)
        ne = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        pos += 4 + 8 * n_dims
        typ, offset = struct.unpack_from("<IQ", data, pos)
        pos += 12
        infos.append((name, ne, typ, offset))
    start = (pos + alignment - 1) // alignment * alignment
    tensors = []
    for name, ne, typ, offset in infos:
        size = int(np.prod(ne)) * {GGML_F32: 4, GGML_F16: 2, GGML_BF16: 2}[typ]
        tensors.append((name, ne, typ, data[start + offset:start + offset + size]))
    return kv, tensors, alignment


def to_float(typ, raw, ne):
    """A float tensor's values, float32, in torch order (ne reversed)."""
    if typ == GGML_F32:
        a = np.frombuffer(raw, dtype="<f4")
    elif typ == GGML_F16:
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return a.reshape(tuple(reversed(ne)))


def write_gguf(path, kv, tensors, alignment=32):
    def string(s):
        b = s.encode()
        return struct.pack("<Q", len(b)) + b
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, typ, raw in kv:
        out += string(key) + struct.pack("<I", typ) + raw
    blobs, offset = [], 0
    for name, ne, typ, raw in tensors:
        out += string(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        out += struct.pack("<IQ", typ, offset)
        blob = raw + b"\0" * (-len(raw) % alignment)
        blobs.append(blob)
        offset += len(blob)
    out += b"\0" * (-len(out) % alignment)
    with open(path, "wb") as f:
        f.write(out)
        for blob in blobs:
            f.write(blob)


def llama_quantizes(name, ne):
    """llama-quant.cpp's tensor_allows_quantization for these RWKV files."""
    if sum(1 for d in ne if d > 1) < 2 or not name.endswith("weight") or "_norm.weight" in name:
        return False
    small = ("time_mix_first", "time_mix_w0", "time_mix_w1", "time_mix_w2", "time_mix_v0", "time_mix_v1",
             "time_mix_v2", "time_mix_a0", "time_mix_a1", "time_mix_a2", "time_mix_g1", "time_mix_g2",
             "time_mix_decay_w1", "time_mix_decay_w2", "time_mix_lerp_fused")
    return not any(s + ".weight" in name for s in small)


# GGUF matrix -> official name, and whether the converter divided it by 2^(layer // rescale).
def official_name(name):
    if name == "token_embd.weight":
        return "emb.weight", False
    if name == "output.weight":
        return "head.weight", False
    _, layer, kind, _ = name.split(".")
    part, _, what = kind.partition("_mix_")
    prefix = f"blocks.{layer}." + ("att." if part == "time" else "ffn.")
    return prefix + what + ".weight", (part, what) in (("time", "output"), ("channel", "value"))


def quantized_copy(kv, tensors, kind, rescale_every=0):
    """The GGUF parts with llama-quantize's choice of tensors quantized to `kind`,
    and {official name: float64 values they decode to, undoing the converter's scaling}."""
    ggml_type, ftype = TYPES[kind]
    kv = [(k, t, struct.pack("<I", ftype) if k == "general.file_type" else raw) for k, t, raw in kv]
    out, decoded = [], {}
    for name, ne, typ, raw in tensors:
        if not llama_quantizes(name, ne):
            out.append((name, ne, typ, raw))
            continue
        blocks = quantize(to_float(typ, raw, ne), kind)
        out.append((name, ne, ggml_type, blocks))
        official, scaled = official_name(name)
        values = dequantize(blocks, kind, tuple(reversed(ne)))
        if scaled and rescale_every:
            values = values * 2.0 ** (int(name.split(".")[1]) // rescale_every)
        decoded[official] = values
    return kv, out, decoded


def main():
    ap = argparse.ArgumentParser(description="quantized GGUF test fixtures")
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    args, _unknown = ap.parse_known_args()

    import torch
    out_dir = os.path.join(args.out, "gguf-quant")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    rng = np.random.default_rng(4242)

    # RWKV-7: llama.cpp's own GGUF and the .pth of the same weights.
    shared = os.path.join(args.shared, "models", "llamacpp-gguf", "rand-v7-L2-C64-hs64-V65536-bf16")
    kv, tensors, alignment = read_gguf(shared + ".gguf")
    official = ref7.load_pth(shared + ".pth")
    for name, ne, typ, raw in tensors:  # the two files hold the same numbers
        if llama_quantizes(name, ne):
            assert np.array_equal(to_float(typ, raw, ne), official[official_name(name)[0]]), name
    tokens = rng.integers(0, 65536, 10).tolist()
    tokens[7] = tokens[2]
    with open(os.path.join(out_dir, "rand-v7.tokens.txt"), "w") as f:
        f.write(",".join(map(str, tokens)) + "\n")
    for kind in TYPES:
        qkv, qtensors, decoded = quantized_copy(kv, tensors, kind)
        write_gguf(os.path.join(out_dir, f"rand-v7-{kind}.gguf"), qkv, qtensors, alignment)
        logits = ref7.forward({**official, **decoded}, tokens)
        np.save(os.path.join(out_dir, f"rand-v7-{kind}.logits.npy"), logits.astype(np.float32))
        print(f"rand-v7-{kind}.gguf: {len(decoded)} tensors quantized, logits std {logits.std():.3g}")

    # RWKV-6 in llama.cpp's layout with rescaling.
    n_layer, rescale = 4, 2
    sd32 = fv.make_v6(6101, n_layer=n_layer, n_embd=64, head_size=32, vocab=300, d_mix=8, d_decay=16)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16) for k, v in sd32.items()}
    kv = [("general.architecture", 8, ff.gguf_string("rwkv6")),
          ("rwkv6.block_count", 4, struct.pack("<I", n_layer)),
          ("rwkv6.embedding_length", 4, struct.pack("<I", 64)),
          ("rwkv6.rescale_every_n_layers", 4, struct.pack("<I", rescale)),
          ("rwkv6.wkv.head_size", 4, struct.pack("<I", 32)),
          ("general.file_type", 4, struct.pack("<I", 32))]
    tensors = []
    for name, t, typ in ff.llamacpp_rwkv6(sd, n_layer, rescale):
        t = t.to(torch.float32 if typ == GGML_F32 else torch.bfloat16).contiguous()
        tensors.append((name, tuple(reversed(t.shape)), typ, ff.raw_bytes(t)))
    official = {k: v.to(torch.float64).numpy() for k, v in sd.items()}
    tokens = rng.integers(0, 300, 24).tolist()
    with open(os.path.join(out_dir, "rand-v6.tokens.txt"), "w") as f:
        f.write(",".join(map(str, tokens)) + "\n")
    for kind in TYPES:
        qkv, qtensors, decoded = quantized_copy(kv, tensors, kind, rescale)
        write_gguf(os.path.join(out_dir, f"rand-v6-{kind}.gguf"), qkv, qtensors)
        logits = ref6.forward({**official, **decoded}, tokens)
        np.save(os.path.join(out_dir, f"rand-v6-{kind}.logits.npy"), logits.astype(np.float32))
        print(f"rand-v6-{kind}.gguf: {len(decoded)} tensors quantized, logits std {logits.std():.3g}")

    print(f"gguf-quant fixtures done in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
