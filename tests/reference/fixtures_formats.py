#!/usr/bin/env python3
"""Fixtures for the file-format tests (run by make_fixtures.py).

    fixtures_formats.py --shared SHARED_DIR --out OUT_DIR

Writes only into OUT_DIR/formats/, deterministically. Each model comes as an
official-layout .pth (real torch.save, bfloat16) and as the same weights in
another tool's layout, written here the way that tool writes them, so that
the C++ tests can require equal logits:

  rand-v7-official.{pth,safetensors}
      a random RWKV-7; the .safetensors has the official names (web-rwkv /
      ai00 style), written by this script's own safetensors writer (the
      specification's layout: 8-byte header length, JSON, tensors sorted by
      dtype width then name, header padded with spaces to a multiple of 8).
  rand-v6-llamacpp.{pth,gguf}
      a random 4-layer RWKV-6 and the GGUF that llama.cpp's convert_hf_to_gguf.py
      (Rwkv6Model, --outtype bf16) writes from its Hugging Face form, with
      rescale_every = 2: names blk.N.*, lerps fused as [5,1,1,C], time_maa_w1
      and the decay LoRA transposed, time_maa_w2 as [5,C,D], vectors squeezed,
      time_mix_output / channel_mix_value divided by 2^(N // 2), 1-D tensors
      and the LoRA/first/lerp tensors in F32, the rest BF16.
  hf-rwkv4.pth, hf-rwkv4/{model.safetensors,config.json}
      a random RWKV-4 and its Hugging Face RwkvForCausalLM form (transformers'
      convert_rwkv_checkpoint_to_hf: rwkv.* names, pre_ln, attention,
      feed_forward, time_mix_key/value/receptance; values unchanged).
  hf-rwkv5.pth, hf-rwkv5/{...}, hf-rwkv6.pth, hf-rwkv6/{...}
      a random RWKV-5.2 and RWKV-6 in the Rwkv5ForCausalLM / Rwkv6ForCausalLM
      form of the RWKV/rwkv-{5,6}-world-*-hf repositories (the same renames
      plus time_mix_gate; time_decay, time_faaaa, time_maa_*, LoRAs as they
      are).
  fla-rwkv7.pth, fla-rwkv7/{model.safetensors,config.json}
      a random RWKV-7 and its flash-linear-attention RWKV7ForCausalLM form
      (fla's utils/convert_from_rwkv7.py: model.layers.N.attn.*, LoRAs as
      transposed lora.0/lora.2 weights with w0/a0/v0 as lora.2.bias, [1,1,C]
      vectors squeezed except attn.x_*, layer 0's v0/v1/v2 dropped).
  fla-rwkv7-tied.pth, fla-rwkv7-tied/{model.safetensors,config.json}
      the same with tie_word_embeddings: no lm_head in the file; the .pth's
      head.weight is the embedding.
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixtures_rwkv7 as f7  # noqa: E402
import fixtures_versions as fv  # noqa: E402


def raw_bytes(t):
    """Little-endian bytes of a torch tensor (bfloat16 as its bit patterns)."""
    import torch
    t = t.contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().astype("<f4").tobytes()


# --- safetensors --------------------------------------------------------------------

ST_NAMES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}


def save_safetensors(tensors, path, metadata=None):
    """{name: torch tensor} -> a safetensors file (layout as the reference library's)."""
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for k in names:
        b = raw_bytes(tensors[k])
        header[k] = {"dtype": ST_NAMES[str(tensors[k].dtype)], "shape": list(tensors[k].shape),
                     "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# --- GGUF ------------------------------------------------------------------------------

GGUF_U32, GGUF_I32, GGUF_F32, GGUF_STRING, GGUF_ARRAY = 4, 5, 6, 8, 9
GGML_F32, GGML_BF16 = 0, 30
ALIGN = 32


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def save_gguf(path, kv, tensors):
    """kv: [(key, gguf type, value)]; tensors: [(name, torch tensor, ggml type)]."""
    import torch
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, typ, value in kv:
        out += gguf_string(key) + struct.pack("<I", typ)
        if typ == GGUF_STRING:
            out += gguf_string(value)
        elif typ == GGUF_U32:
            out += struct.pack("<I", value)
        elif typ == GGUF_F32:
            out += struct.pack("<f", value)
        else:
            raise ValueError(typ)
    blobs, offset = [], 0
    for name, t, typ in tensors:
        t = t.to(torch.float32 if typ == GGML_F32 else torch.bfloat16)
        shape = list(reversed(t.shape))  # ggml's ne[]: innermost first
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", typ, offset)
        b = raw_bytes(t)
        b += b"\0" * (-len(b) % ALIGN)
        blobs.append(b)
        offset += len(b)
    out += b"\0" * (-len(out) % ALIGN)
    with open(path, "wb") as f:
        f.write(out)
        for b in blobs:
            f.write(b)


def llamacpp_rwkv6(sd, n_layer, rescale_every):
    """What convert_hf_to_gguf.py's Rwkv6Model writes for these official weights."""
    import torch
    f32_kinds = ("time_mix_first", "time_mix_w1", "time_mix_w2", "time_mix_decay_w1", "time_mix_decay_w2",
                 "time_mix_lerp_fused")
    out = [("token_embd.weight", sd["emb.weight"]),
           ("token_embd_norm.weight", sd["blocks.0.ln0.weight"]),
           ("token_embd_norm.bias", sd["blocks.0.ln0.bias"])]
    for i in range(n_layer):
        a, f, g = f"blocks.{i}.att.", f"blocks.{i}.ffn.", f"blk.{i}."
        scale = 2 ** (i // rescale_every)
        out += [(g + "attn_norm.weight", sd[f"blocks.{i}.ln1.weight"]),
                (g + "attn_norm.bias", sd[f"blocks.{i}.ln1.bias"]),
                (g + "attn_norm_2.weight", sd[f"blocks.{i}.ln2.weight"]),
                (g + "attn_norm_2.bias", sd[f"blocks.{i}.ln2.bias"]),
                (g + "time_mix_lerp_x.weight", sd[a + "time_maa_x"].squeeze()),
                (g + "time_mix_lerp_fused.weight",
                 torch.stack([sd[a + "time_maa_" + x].squeeze().unsqueeze(0) for x in "wkvrg"], dim=0).unsqueeze(1)),
                (g + "time_mix_w1.weight", sd[a + "time_maa_w1"].transpose(0, 1)),
                (g + "time_mix_w2.weight", sd[a + "time_maa_w2"].permute(0, 2, 1)),
                (g + "time_mix_decay.weight", sd[a + "time_decay"].squeeze()),
                (g + "time_mix_decay_w1.weight", sd[a + "time_decay_w1"].transpose(0, 1)),
                (g + "time_mix_decay_w2.weight", sd[a + "time_decay_w2"].transpose(0, 1)),
                (g + "time_mix_first.weight", sd[a + "time_faaaa"]),
                (g + "time_mix_key.weight", sd[a + "key.weight"]),
                (g + "time_mix_value.weight", sd[a + "value.weight"]),
                (g + "time_mix_receptance.weight", sd[a + "receptance.weight"]),
                (g + "time_mix_gate.weight", sd[a + "gate.weight"]),
                (g + "time_mix_ln.weight", sd[a + "ln_x.weight"]),
                (g + "time_mix_ln.bias", sd[a + "ln_x.bias"]),
                (g + "time_mix_output.weight", sd[a + "output.weight"] / scale),
                (g + "channel_mix_lerp_k.weight", sd[f + "time_maa_k"].squeeze()),
                (g + "channel_mix_lerp_r.weight", sd[f + "time_maa_r"].squeeze()),
                (g + "channel_mix_key.weight", sd[f + "key.weight"]),
                (g + "channel_mix_value.weight", sd[f + "value.weight"] / scale),
                (g + "channel_mix_receptance.weight", sd[f + "receptance.weight"])]
    out += [("output_norm.weight", sd["ln_out.weight"]), ("output_norm.bias", sd["ln_out.bias"]),
            ("output.weight", sd["head.weight"])]
    return [(n, t, GGML_F32 if t.dim() <= 1 or n.split(".")[-2] in f32_kinds else GGML_BF16) for n, t in out]


# --- Hugging Face layouts ------------------------------------------------------------

def hf_rwkv(sd):
    """transformers' convert_rwkv_checkpoint_to_hf.convert_state_dict (renames only), and the
    same renames plus time_mix_g -> time_mix_gate that the RWKV/rwkv-5-world-*-hf and
    rwkv-6-world-*-hf checkpoints were made with (Rwkv5ForCausalLM / Rwkv6ForCausalLM)."""
    import re
    out = {}
    for name, t in sd.items():
        if name.startswith("emb."):
            name = name.replace("emb.", "embeddings.")
        if name.startswith("blocks.0.ln0"):
            name = name.replace("blocks.0.ln0", "blocks.0.pre_ln")
        name = re.sub(r"blocks\.(\d+)\.att", r"blocks.\1.attention", name)
        name = re.sub(r"blocks\.(\d+)\.ffn", r"blocks.\1.feed_forward", name)
        for short, long in (("k", "key"), ("v", "value"), ("r", "receptance"), ("g", "gate")):
            if name.endswith(".time_mix_" + short):
                name = name[:-len(short)] + long
        if name != "head.weight":
            name = "rwkv." + name
        out[name] = t
    return out


def fla_rwkv7(sd, n_embd):
    """fla's utils/convert_from_rwkv7.py translate_into_fla, applied to a state dict."""
    import re
    emb_head = {"emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
                "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight"}
    proj = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "ln_x": "g_norm", "output": "o_proj"}
    out = {}
    for name, t in sd.items():
        if name in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
            continue
        if name in emb_head:
            out[emb_head[name]] = t
            continue
        c = name.split(".")
        c[0] = "model.layers"
        c[2] = {"att": "attn", "ffn": "ffn", "ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}[c[2]]
        transposed = False
        if re.match("[wvag][012]", c[3]):
            typ, num = c[3]
            c[3] = f"{typ}_lora.lora." + {"0": "2.bias", "1": "0.weight", "2": "2.weight"}[num]
            transposed = num in "12"
        elif c[2] == "attn" and c[3] in proj:
            c[3] = proj[c[3]]
        fla = ".".join(c)
        if transposed:
            t = t.t()
        if list(t.shape) == [1, 1, n_embd] and "attn.x_" not in fla:
            t = t.squeeze()
        out[fla] = t.contiguous()
    return out


def main():
    ap = argparse.ArgumentParser(description="file-format test fixtures")
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    args, _unknown = ap.parse_known_args()

    import torch
    out_dir = os.path.join(args.out, "formats")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()

    def path(*names):
        p = os.path.join(out_dir, *names)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    # Official names in a safetensors file.
    sd = f7.save_pth(f7.make_random_v7(7101, n_layer=2, n_embd=64, head_size=32, vocab_size=200, d_decay=16,
                                       d_aaa=16, d_mv=8, d_gate=32, layer0_v=True),
                     path("rand-v7-official.pth"), dtype=torch.bfloat16)
    save_safetensors(sd, path("rand-v7-official.safetensors"), {"format": "pt"})

    # llama.cpp's RWKV-6 GGUF.
    n_layer, rescale = 4, 2
    sd = f7.save_pth(fv.make_v6(6101, n_layer=n_layer, n_embd=64, head_size=32, vocab=300, d_mix=8, d_decay=16),
                     path("rand-v6-llamacpp.pth"), dtype=torch.bfloat16)
    kv = [("general.architecture", GGUF_STRING, "rwkv6"), ("general.name", GGUF_STRING, "Hf"),
          ("rwkv6.context_length", GGUF_U32, 1048576), ("rwkv6.embedding_length", GGUF_U32, 64),
          ("rwkv6.block_count", GGUF_U32, n_layer), ("rwkv6.attention.layer_norm_epsilon", GGUF_F32, 1e-5),
          ("rwkv6.rescale_every_n_layers", GGUF_U32, rescale), ("rwkv6.wkv.head_size", GGUF_U32, 32),
          ("rwkv6.time_mix_extra_dim", GGUF_U32, 8), ("rwkv6.time_decay_extra_dim", GGUF_U32, 16),
          ("rwkv6.feed_forward_length", GGUF_U32, 256), ("general.file_type", GGUF_U32, 32),
          ("rwkv6.attention.head_count", GGUF_U32, 0)]
    save_gguf(path("rand-v6-llamacpp.gguf"), kv, llamacpp_rwkv6(sd, n_layer, rescale))

    # Hugging Face RWKV-4.
    sd = f7.save_pth(fv.make_v4(4101, n_layer=3, n_embd=64, vocab=300, d_ffn=192), path("hf-rwkv4.pth"),
                     dtype=torch.bfloat16)
    save_safetensors(hf_rwkv(sd), path("hf-rwkv4", "model.safetensors"), {"format": "pt"})
    with open(path("hf-rwkv4", "config.json"), "w") as f:
        json.dump({"architectures": ["RwkvForCausalLM"], "model_type": "rwkv", "vocab_size": 300,
                   "hidden_size": 64, "num_hidden_layers": 3, "attention_hidden_size": 64,
                   "intermediate_size": 192, "context_length": 1024, "layer_norm_epsilon": 1e-5,
                   "rescale_every": 6, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0},
                  f, indent=2)

    # Hugging Face RWKV-5.2 and RWKV-6 (the RWKV/rwkv-{5,6}-world-*-hf classes).
    sd = f7.save_pth(fv.make_v5(5301, version="5.2", n_layer=3, n_embd=64, head_size=32, vocab=280),
                     path("hf-rwkv5.pth"), dtype=torch.bfloat16)
    save_safetensors(hf_rwkv(sd), path("hf-rwkv5", "model.safetensors"), {"format": "pt"})
    with open(path("hf-rwkv5", "config.json"), "w") as f:
        json.dump({"architectures": ["Rwkv5ForCausalLM"], "model_type": "rwkv5", "vocab_size": 280,
                   "hidden_size": 64, "num_hidden_layers": 3, "attention_hidden_size": 64, "head_size": 32,
                   "num_attention_heads": 32, "intermediate_size": None, "layer_norm_epsilon": 1e-5,
                   "rescale_every": 6, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0},
                  f, indent=2)
    sd = f7.save_pth(fv.make_v6(6301, n_layer=3, n_embd=64, head_size=32, vocab=290, d_mix=8, d_decay=16),
                     path("hf-rwkv6.pth"), dtype=torch.bfloat16)
    save_safetensors(hf_rwkv(sd), path("hf-rwkv6", "model.safetensors"), {"format": "pt"})
    with open(path("hf-rwkv6", "config.json"), "w") as f:
        json.dump({"architectures": ["Rwkv6ForCausalLM"], "model_type": "rwkv6", "vocab_size": 290,
                   "hidden_size": 64, "num_hidden_layers": 3, "attention_hidden_size": 64, "head_size": 32,
                   "head_size_divisor": 8, "intermediate_size": None, "layer_norm_epsilon": 1e-5,
                   "rescale_every": 6, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0},
                  f, indent=2)

    # flash-linear-attention RWKV-7, with and without a tied head.
    for name, tied in (("fla-rwkv7", False), ("fla-rwkv7-tied", True)):
        w = f7.make_random_v7(7201, n_layer=3, n_embd=64, head_size=32, vocab_size=260, d_decay=16, d_aaa=16,
                              d_mv=8, d_gate=32, layer0_v=True)
        if tied:
            w["head.weight"] = w["emb.weight"].copy()
        sd = f7.save_pth(w, path(name + ".pth"), dtype=torch.bfloat16)
        fla = fla_rwkv7(sd, 64)
        if tied:
            del fla["lm_head.weight"]
        save_safetensors(fla, path(name, "model.safetensors"), {"format": "pt"})
        with open(path(name, "config.json"), "w") as f:
            json.dump({"architectures": ["RWKV7ForCausalLM"], "model_type": "rwkv7", "vocab_size": 260,
                       "hidden_size": 64, "num_hidden_layers": 3, "head_dim": 32, "decay_low_rank_dim": 16,
                       "a_low_rank_dim": 16, "v_low_rank_dim": 8, "gate_low_rank_dim": 32,
                       "intermediate_size": 256, "norm_eps": 1e-5, "tie_word_embeddings": tied}, f, indent=2)

    print(f"formats fixtures done in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
