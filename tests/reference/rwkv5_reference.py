#!/usr/bin/env python3
"""RWKV-5 (5.0, 5.1, 5.2 "Eagle" x052) reference forward pass in numpy float64.

The project's own, plain implementation in recurrent (RNN) form, one token
at a time, to check the C++ engine against.  Readability over speed.

Official checkpoint layout (RWKV-LM RWKV-v5, BlinkDL's published files):

    emb.weight [V, C]   blocks.0.ln0.{weight,bias} [C]   ln_out.* [C]   head.weight [V, C]
    blocks.i.ln1/ln2.{weight,bias}       [C]
    blocks.i.att.time_mix_{k,v,r}        [1,1,C]    (+ time_mix_g from 5.1 on)
    blocks.i.att.time_decay              5.0/5.1: [H] (one decay per head)
                                         5.2:     [H, N] (one per channel)
    blocks.i.att.time_first              5.0/5.1: [H], used as exp(time_first)
    blocks.i.att.time_faaaa              5.2:     [H, N], used as it is
    blocks.i.att.{receptance,key,value,output}.weight [C, C]
    blocks.i.att.gate.weight             [C, C]     (5.1, 5.2)
    blocks.i.att.ln_x.{weight,bias}      [C]        GroupNorm with H groups
    blocks.i.ffn.time_mix_{k,r} [1,1,C]  key [F, C]  value [C, F]  receptance [C, C]

The version follows the official rules (ChatRWKV rwkv/model.py): ln_x means
5.x; gate.weight means 5.1 or later; a time_decay whose second dimension is
larger than 1 means 5.2.  The head count is time_decay's first dimension,
the head size N = C / H (8 in rwkv.cpp's tiny test models, 64 in released ones).

Per head h the state is a matrix S[h] [N, N], S[i, j] with i the key channel
and j the value channel (the official orientation):
    out_j = sum_i r_i * (u_i * k_i * v_j + S[i, j])
    S[i, j] <- k_i * v_j + w_i * S[i, j],   w = exp(-exp(time_decay))
then a GroupNorm over each head's N outputs, the gate silu(gate @ xg) (5.1+),
and the output projection.

GroupNorm epsilon: the official code uses 64e-5 (ChatRWKV writes it out; in
training it is nn.GroupNorm's 1e-5 applied to x / head_size_divisor with the
divisor 8, the same thing).  rwkv.cpp uses 1e-5 for RWKV-5, so its expected
logits for its tiny 5.x models need gn_eps=1e-5 here.

Per layer the state is att_x [C], S [H, N, N], ffn_x [C].

Use as a module:   logits = forward(load_pth("m.pth"), [1, 2, 3])
From the shell:    rwkv5_reference.py --model m.pth --tokens 1,2,3 --out l.npy [--gn-eps 1e-5]
"""

import argparse
import re
import sys
from types import SimpleNamespace

import numpy as np

LN_EPS = 1e-5
GN_EPS = 64e-5  # the official att.ln_x epsilon


def load_pth(path):
    """An official .pth checkpoint as {name: float64 numpy array}."""
    import torch
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:
        sd = torch.load(path, map_location="cpu")
    return {k: v.detach().to(torch.float64).numpy() for k, v in sd.items()}


def detect_version(weights):
    """'5.0', '5.1' or '5.2', by the official rules."""
    if not any("ln_x" in k for k in weights):
        raise ValueError("no att.ln_x tensors: not an RWKV-5 checkpoint")
    version = "5.1" if any("gate.weight" in k for k in weights) else "5.0"
    for k, v in weights.items():
        if k.endswith("att.time_decay") and np.ndim(v) > 1 and np.shape(v)[1] > 1:
            version = "5.2"
    return version


def infer_config(weights):
    layers = {int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", k) for k in weights) if m}
    V, C = np.shape(weights["emb.weight"])
    H = np.shape(weights["blocks.0.att.time_decay"])[0]
    if C % H:
        raise ValueError(f"{H} heads do not divide C={C}")
    return SimpleNamespace(version=detect_version(weights), n_layer=max(layers) + 1, n_embd=C,
                           n_head=H, head_size=C // H, vocab_size=V,
                           d_ffn=np.shape(weights["blocks.0.ffn.key.weight"])[0])


def _per_channel(a, cfg, name):
    """A per-head [H] or per-channel [H, N] parameter as [H, N]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size == cfg.n_head:
        return np.repeat(a[:, None], cfg.head_size, axis=1)
    if a.size == cfg.n_embd:
        return a.reshape(cfg.n_head, cfg.head_size)
    raise ValueError(f"{name}: {a.size} elements, expected {cfg.n_head} or {cfg.n_embd}")


def _prepare(weights, cfg):
    C, F = cfg.n_embd, cfg.d_ffn
    gated = cfg.version != "5.0"

    def vec(name):
        a = np.asarray(weights[name], dtype=np.float64).reshape(-1)
        if a.shape != (C,):
            raise ValueError(f"{name}: {a.size} elements, expected {C}")
        return a

    def mat(name, shape):
        a = np.asarray(weights[name], dtype=np.float64)
        if a.shape != shape:
            raise ValueError(f"{name}: shape {a.shape}, expected {shape}")
        return a

    m = SimpleNamespace(emb=mat("emb.weight", (cfg.vocab_size, C)),
                        ln0=(vec("blocks.0.ln0.weight"), vec("blocks.0.ln0.bias")),
                        ln_out=(vec("ln_out.weight"), vec("ln_out.bias")),
                        head=mat("head.weight", (cfg.vocab_size, C)), layers=[])
    for i in range(cfg.n_layer):
        b, att, ffn = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        if att + "time_faaaa" in weights:   # stored as the bonus itself
            first = _per_channel(weights[att + "time_faaaa"], cfg, att + "time_faaaa")
        else:                               # stored as its logarithm
            first = np.exp(_per_channel(weights[att + "time_first"], cfg, att + "time_first"))
        p = SimpleNamespace(
            ln1=(vec(b + "ln1.weight"), vec(b + "ln1.bias")),
            ln2=(vec(b + "ln2.weight"), vec(b + "ln2.bias")),
            mix_k=vec(att + "time_mix_k"), mix_v=vec(att + "time_mix_v"), mix_r=vec(att + "time_mix_r"),
            decay=np.exp(-np.exp(_per_channel(weights[att + "time_decay"], cfg, att + "time_decay"))),
            first=first,
            W_r=mat(att + "receptance.weight", (C, C)), W_k=mat(att + "key.weight", (C, C)),
            W_v=mat(att + "value.weight", (C, C)), W_o=mat(att + "output.weight", (C, C)),
            ln_x=(vec(att + "ln_x.weight"), vec(att + "ln_x.bias")),
            ffn_mix_k=vec(ffn + "time_mix_k"), ffn_mix_r=vec(ffn + "time_mix_r"),
            ffn_key=mat(ffn + "key.weight", (F, C)), ffn_value=mat(ffn + "value.weight", (C, F)),
            ffn_receptance=mat(ffn + "receptance.weight", (C, C)),
        )
        if gated:
            p.mix_g = vec(att + "time_mix_g")
            p.W_g = mat(att + "gate.weight", (C, C))
        m.layers.append(p)
    return m


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def layer_norm(x, weight, bias, eps=LN_EPS):
    mean = x.mean()
    var = ((x - mean) ** 2).mean()
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def group_norm(y, weight, bias, eps):
    """Normalises each head of y [H, N] separately; returns [C]."""
    mean = y.mean(axis=1, keepdims=True)
    var = ((y - mean) ** 2).mean(axis=1, keepdims=True)
    return ((y - mean) / np.sqrt(var + eps)).reshape(-1) * weight + bias


def mix(x, x_prev, m):
    return x * m + x_prev * (1.0 - m)


def time_mix(p, cfg, i, x, state, gn_eps):
    H, N = cfg.n_head, cfg.head_size
    x_prev = state.att_x[i]
    r = (p.W_r @ mix(x, x_prev, p.mix_r)).reshape(H, N)
    k = (p.W_k @ mix(x, x_prev, p.mix_k)).reshape(H, N)
    v = (p.W_v @ mix(x, x_prev, p.mix_v)).reshape(H, N)

    S = state.wkv[i]                                 # [H, N(key), N(value)]
    kv = k[:, :, None] * v[:, None, :]               # this token's outer product
    y = np.einsum("hi,hij->hj", r, p.first[:, :, None] * kv + S)
    state.wkv[i] = kv + p.decay[:, :, None] * S
    state.att_x[i] = x

    y = group_norm(y, *p.ln_x, gn_eps)
    if cfg.version != "5.0":
        y = y * silu(p.W_g @ mix(x, x_prev, p.mix_g))
    return p.W_o @ y


def channel_mix(p, i, x, state):
    x_prev = state.ffn_x[i]
    r = sigmoid(p.ffn_receptance @ mix(x, x_prev, p.ffn_mix_r))
    k = np.maximum(p.ffn_key @ mix(x, x_prev, p.ffn_mix_k), 0.0) ** 2
    state.ffn_x[i] = x
    return r * (p.ffn_value @ k)


def init_state(cfg):
    C, H, N, L = cfg.n_embd, cfg.n_head, cfg.head_size, cfg.n_layer
    return SimpleNamespace(att_x=[np.zeros(C) for _ in range(L)], wkv=[np.zeros((H, N, N)) for _ in range(L)],
                           ffn_x=[np.zeros(C) for _ in range(L)])


def forward(weights, tokens, state=None, gn_eps=GN_EPS):
    """Logits [T, V] (float64) after each token; `state` (from init_state) is updated in place."""
    cfg = infer_config(weights)
    m = _prepare(weights, cfg)
    if state is None:
        state = init_state(cfg)
    out = np.empty((len(tokens), cfg.vocab_size))
    for pos, t in enumerate(int(t) for t in tokens):
        if not 0 <= t < cfg.vocab_size:
            raise ValueError(f"token {t} outside vocabulary of {cfg.vocab_size}")
        x = layer_norm(m.emb[t], *m.ln0)
        for i, p in enumerate(m.layers):
            x = x + time_mix(p, cfg, i, layer_norm(x, *p.ln1), state, gn_eps)
            x = x + channel_mix(p, i, layer_norm(x, *p.ln2), state)
        out[pos] = m.head @ layer_norm(x, *m.ln_out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="official-layout .pth")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True, help="output .npy: float32 logits [T, V]")
    ap.add_argument("--gn-eps", type=float, default=GN_EPS, help="att.ln_x epsilon (official: 64e-5)")
    args = ap.parse_args(argv)
    weights = load_pth(args.model)
    print(f"{args.model}: {infer_config(weights)}", file=sys.stderr)
    logits = forward(weights, [int(s) for s in args.tokens.split(",") if s.strip()], gn_eps=args.gn_eps)
    np.save(args.out, logits.astype(np.float32))
    print(f"wrote {args.out}: {logits.shape}", file=sys.stderr)


if __name__ == "__main__":
    main()
