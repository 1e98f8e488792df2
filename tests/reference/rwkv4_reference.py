#!/usr/bin/env python3
"""RWKV-4 reference forward pass in numpy float64.

The project's own, deliberately plain implementation of RWKV-4 in its
recurrent (RNN) form, one token at a time, so that the C++ engine can be
checked against an independent computation.  Readability over speed.

Weights use the official checkpoint layout (RWKV-LM RWKV-v4neo, the
published RWKV-4 Pile/Raven/World .pth files):

    emb.weight                        [V, C]
    blocks.0.ln0.{weight,bias}        [C]      applied once, to the embedding
    blocks.i.ln1/ln2.{weight,bias}    [C]
    blocks.i.att.time_mix_{k,v,r}     [1,1,C]  token-shift mixes
    blocks.i.att.time_decay           [C]      decay w = -exp(time_decay)
    blocks.i.att.time_first           [C]      bonus u of the current token
    blocks.i.att.{key,value,receptance}.weight [C, C]  (torch Linear: [out, in])
    blocks.i.att.output.weight        [C, C]
    blocks.i.ffn.time_mix_{k,r}       [1,1,C]
    blocks.i.ffn.key.weight [F, C]  value.weight [C, F]  receptance.weight [C, C]
    ln_out.{weight,bias} [C]          head.weight [V, C]

Per layer the state is (the official order):
    att_x [C]   previous token's ln1 output (time-mix token shift)
    aa    [C]   running numerator   sum_i exp(w*(t-1-i) + k_i - pp) v_i
    bb    [C]   running denominator sum_i exp(w*(t-1-i) + k_i - pp)
    pp    [C]   the exponent factored out of aa and bb (a running maximum);
                -1e30 before the first token, as in the official code
    ffn_x [C]   previous token's ln2 output (channel-mix token shift)

Use as a module:    logits = forward(load_pth("m.pth"), [1, 2, 3])
From the shell:     rwkv4_reference.py --model m.pth --tokens 1,2,3 --out l.npy
"""

import argparse
import re
import sys
from types import SimpleNamespace

import numpy as np

LN_EPS = 1e-5           # torch.nn.LayerNorm default, for ln0/ln1/ln2/ln_out
PP_INIT = -1e30         # the official initial value of pp ("minus infinity")


def load_pth(path):
    """An official .pth checkpoint as {name: float64 numpy array}."""
    import torch
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # older torch without weights_only
        sd = torch.load(path, map_location="cpu")
    return {k: v.detach().to(torch.float64).numpy() for k, v in sd.items()}


def infer_config(weights):
    layers = {int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", k) for k in weights) if m}
    if not layers:
        raise ValueError("no blocks.N.* tensors: not an RWKV checkpoint")
    V, C = np.shape(weights["emb.weight"])
    return SimpleNamespace(n_layer=max(layers) + 1, n_embd=C, vocab_size=V,
                           d_ffn=np.shape(weights["blocks.0.ffn.key.weight"])[0])


def _prepare(weights, cfg):
    C, F = cfg.n_embd, cfg.d_ffn

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
            mix_k=vec(att + "time_mix_k"), mix_v=vec(att + "time_mix_v"), mix_r=vec(att + "time_mix_r"),
            decay=-np.exp(vec(att + "time_decay")),    # w < 0: log of the per-step decay
            first=vec(att + "time_first"),
            W_k=mat(att + "key.weight", (C, C)), W_v=mat(att + "value.weight", (C, C)),
            W_r=mat(att + "receptance.weight", (C, C)), W_o=mat(att + "output.weight", (C, C)),
            ffn_mix_k=vec(ffn + "time_mix_k"), ffn_mix_r=vec(ffn + "time_mix_r"),
            ffn_key=mat(ffn + "key.weight", (F, C)), ffn_value=mat(ffn + "value.weight", (C, F)),
            ffn_receptance=mat(ffn + "receptance.weight", (C, C)),
        ))
    return m


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(x, weight, bias):
    mean = x.mean()
    var = ((x - mean) ** 2).mean()
    return (x - mean) / np.sqrt(var + LN_EPS) * weight + bias


def mix(x, x_prev, m):
    """RWKV-4/5 token shift: m = 1 keeps the current token, 0 the previous."""
    return x * m + x_prev * (1.0 - m)


def time_mix(p, i, x, state):
    x_prev = state.att_x[i]
    k = p.W_k @ mix(x, x_prev, p.mix_k)
    v = p.W_v @ mix(x, x_prev, p.mix_v)
    r = sigmoid(p.W_r @ mix(x, x_prev, p.mix_r))
    aa, bb, pp = state.aa[i], state.bb[i], state.pp[i]

    # Output: the stored past (scaled by exp(pp)) plus the current token with
    # its bonus u, both rescaled by their common maximum exponent.
    ww = p.first + k
    q = np.maximum(pp, ww)
    e1, e2 = np.exp(pp - q), np.exp(ww - q)
    wkv = (e1 * aa + e2 * v) / (e1 * bb + e2)

    # State: decay the past by exp(w), add the current token with weight exp(k).
    ww = pp + p.decay
    q = np.maximum(ww, k)
    e1, e2 = np.exp(ww - q), np.exp(k - q)
    state.aa[i], state.bb[i], state.pp[i] = e1 * aa + e2 * v, e1 * bb + e2, q
    state.att_x[i] = x
    return p.W_o @ (r * wkv)


def channel_mix(p, i, x, state):
    x_prev = state.ffn_x[i]
    r = sigmoid(p.ffn_receptance @ mix(x, x_prev, p.ffn_mix_r))
    k = np.maximum(p.ffn_key @ mix(x, x_prev, p.ffn_mix_k), 0.0) ** 2
    state.ffn_x[i] = x
    return r * (p.ffn_value @ k)


def init_state(cfg):
    C, L = cfg.n_embd, cfg.n_layer
    return SimpleNamespace(att_x=[np.zeros(C) for _ in range(L)], aa=[np.zeros(C) for _ in range(L)],
                           bb=[np.zeros(C) for _ in range(L)], pp=[np.full(C, PP_INIT) for _ in range(L)],
                           ffn_x=[np.zeros(C) for _ in range(L)])


def forward(weights, tokens, state=None):
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
            x = x + time_mix(p, i, layer_norm(x, *p.ln1), state)
            x = x + channel_mix(p, i, layer_norm(x, *p.ln2), state)
        out[pos] = m.head @ layer_norm(x, *m.ln_out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="official-layout .pth")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True, help="output .npy: float32 logits [T, V]")
    args = ap.parse_args(argv)
    logits = forward(load_pth(args.model), [int(s) for s in args.tokens.split(",") if s.strip()])
    np.save(args.out, logits.astype(np.float32))
    print(f"wrote {args.out}: {logits.shape}", file=sys.stderr)


if __name__ == "__main__":
    main()
