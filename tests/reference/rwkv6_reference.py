#!/usr/bin/env python3
"""RWKV-6 ("Finch", x060) reference forward pass in numpy float64.

The project's own, plain implementation in recurrent (RNN) form, one token
at a time, to check the C++ engine against.  Readability over speed.

Official checkpoint layout (RWKV-LM RWKV-v5/src/model.py RWKV_Tmix_x060,
BlinkDL's published RWKV-6 files):

    emb.weight [V, C]   blocks.0.ln0.{weight,bias} [C]   ln_out.* [C]   head.weight [V, C]
    blocks.i.ln1/ln2.{weight,bias}          [C]
    blocks.i.att.time_maa_{x,w,k,v,r,g}     [1,1,C]   token-shift base mixes
    blocks.i.att.time_maa_w1                [C, 5*Dm] data-dependent mix LoRA (w,k,v,r,g)
    blocks.i.att.time_maa_w2                [5, Dm, C]
    blocks.i.att.time_decay                 [1,1,C]   decay base
    blocks.i.att.time_decay_w1 [C, Dw]  time_decay_w2 [Dw, C]   decay LoRA
    blocks.i.att.time_faaaa                 [H, N]    bonus u of the current token
    blocks.i.att.{receptance,key,value,gate,output}.weight [C, C]
    blocks.i.att.ln_x.{weight,bias}         [C]       GroupNorm with H groups
    blocks.i.ffn.time_maa_{k,r} [1,1,C]  key [F, C]  value [C, F]  receptance [C, C]

H is time_faaaa's first dimension, N = C / H.

Token shift is data-dependent:  with dx = x_prev - x,
    m = tanh((x + dx * maa_x) @ W1) split into 5 parts, each @ W2[j]
    x_j = x + dx * (maa_j + m_j)      for j in w, k, v, r, g
The decay is per token and channel:  w = exp(-exp(time_decay + tanh(x_w @ Dw1) @ Dw2)).
Per head the state S [N, N] (i: key channel, j: value channel, the official
orientation) gives
    out_j = sum_i r_i * (u_i * k_i * v_j + S[i, j])
    S[i, j] <- k_i * v_j + w_i * S[i, j]
then GroupNorm per head (eps 64e-5), times silu(gate @ x_g), output projection.
The FFN is RWKV-4's with the mixes written as x + dx * maa.

Per layer the state is att_x [C], S [H, N, N], ffn_x [C].

Use as a module:   logits = forward(load_pth("m.pth"), [1, 2, 3])
From the shell:    rwkv6_reference.py --model m.pth --tokens 1,2,3 --out l.npy
"""

import argparse
import re
import sys
from types import SimpleNamespace

import numpy as np

LN_EPS = 1e-5
GN_EPS = 64e-5
MIX_ORDER = ("w", "k", "v", "r", "g")  # order of the five parts of time_maa_w1/w2


def load_pth(path):
    """An official .pth checkpoint as {name: float64 numpy array}."""
    import torch
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:
        sd = torch.load(path, map_location="cpu")
    return {k: v.detach().to(torch.float64).numpy() for k, v in sd.items()}


def infer_config(weights):
    layers = {int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", k) for k in weights) if m}
    V, C = np.shape(weights["emb.weight"])
    H, N = np.shape(weights["blocks.0.att.time_faaaa"])
    if H * N != C:
        raise ValueError(f"time_faaaa [{H}, {N}] does not match C={C}")
    d_mix5 = np.shape(weights["blocks.0.att.time_maa_w1"])[1]
    if d_mix5 % 5:
        raise ValueError("time_maa_w1 must have 5 * D columns")
    return SimpleNamespace(n_layer=max(layers) + 1, n_embd=C, n_head=H, head_size=N, vocab_size=V,
                           d_mix=d_mix5 // 5, d_decay=np.shape(weights["blocks.0.att.time_decay_w1"])[1],
                           d_ffn=np.shape(weights["blocks.0.ffn.key.weight"])[0])


def _prepare(weights, cfg):
    C, F, H, N, Dm, Dw = cfg.n_embd, cfg.d_ffn, cfg.n_head, cfg.head_size, cfg.d_mix, cfg.d_decay

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
        m.layers.append(SimpleNamespace(
            ln1=(vec(b + "ln1.weight"), vec(b + "ln1.bias")),
            ln2=(vec(b + "ln2.weight"), vec(b + "ln2.bias")),
            maa_x=vec(att + "time_maa_x"),
            maa={j: vec(att + "time_maa_" + j) for j in MIX_ORDER},
            maa_w1=mat(att + "time_maa_w1", (C, 5 * Dm)), maa_w2=mat(att + "time_maa_w2", (5, Dm, C)),
            decay=vec(att + "time_decay"),
            decay_w1=mat(att + "time_decay_w1", (C, Dw)), decay_w2=mat(att + "time_decay_w2", (Dw, C)),
            first=mat(att + "time_faaaa", (H, N)),
            W_r=mat(att + "receptance.weight", (C, C)), W_k=mat(att + "key.weight", (C, C)),
            W_v=mat(att + "value.weight", (C, C)), W_g=mat(att + "gate.weight", (C, C)),
            W_o=mat(att + "output.weight", (C, C)),
            ln_x=(vec(att + "ln_x.weight"), vec(att + "ln_x.bias")),
            ffn_maa_k=vec(ffn + "time_maa_k"), ffn_maa_r=vec(ffn + "time_maa_r"),
            ffn_key=mat(ffn + "key.weight", (F, C)), ffn_value=mat(ffn + "value.weight", (C, F)),
            ffn_receptance=mat(ffn + "receptance.weight", (C, C)),
        ))
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
    mean = y.mean(axis=1, keepdims=True)
    var = ((y - mean) ** 2).mean(axis=1, keepdims=True)
    return ((y - mean) / np.sqrt(var + eps)).reshape(-1) * weight + bias


def time_mix(p, cfg, i, x, state, gn_eps):
    H, N, Dm = cfg.n_head, cfg.head_size, cfg.d_mix
    dx = state.att_x[i] - x
    hidden = np.tanh((x + dx * p.maa_x) @ p.maa_w1).reshape(5, Dm)
    xs = {j: x + dx * (p.maa[j] + hidden[n] @ p.maa_w2[n]) for n, j in enumerate(MIX_ORDER)}

    r = (p.W_r @ xs["r"]).reshape(H, N)
    k = (p.W_k @ xs["k"]).reshape(H, N)
    v = (p.W_v @ xs["v"]).reshape(H, N)
    g = silu(p.W_g @ xs["g"])
    w = np.exp(-np.exp(p.decay + np.tanh(xs["w"] @ p.decay_w1) @ p.decay_w2)).reshape(H, N)

    S = state.wkv[i]                                 # [H, N(key), N(value)]
    kv = k[:, :, None] * v[:, None, :]
    y = np.einsum("hi,hij->hj", r, p.first[:, :, None] * kv + S)
    state.wkv[i] = kv + w[:, :, None] * S
    state.att_x[i] = x
    return p.W_o @ (group_norm(y, *p.ln_x, gn_eps) * g)


def channel_mix(p, i, x, state):
    dx = state.ffn_x[i] - x
    r = sigmoid(p.ffn_receptance @ (x + dx * p.ffn_maa_r))
    k = np.maximum(p.ffn_key @ (x + dx * p.ffn_maa_k), 0.0) ** 2
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
    args = ap.parse_args(argv)
    weights = load_pth(args.model)
    print(f"{args.model}: {infer_config(weights)}", file=sys.stderr)
    logits = forward(weights, [int(s) for s in args.tokens.split(",") if s.strip()])
    np.save(args.out, logits.astype(np.float32))
    print(f"wrote {args.out}: {logits.shape}", file=sys.stderr)


if __name__ == "__main__":
    main()
