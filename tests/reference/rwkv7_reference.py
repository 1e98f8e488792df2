#!/usr/bin/env python3
"""RWKV-7 ("Goose", x070) reference forward pass in numpy float64.

This is the project's own, deliberately plain implementation of RWKV-7 in
its recurrent (RNN) form: tokens are processed one at a time and the state
is carried between them.  It exists so that the C++ engine can be checked
against an independent computation; speed is not a goal, readability is.

Weights use the official checkpoint layout (the names and shapes of the
state dicts that RWKV-LM trains and BlinkDL publishes):

    emb.weight                 [V, C]
    blocks.0.ln0.{weight,bias} [C]          (applied once, to the embedding)
    blocks.i.ln1/ln2.{w,b}     [C]
    blocks.i.att.x_{r,w,k,v,a,g}  [1,1,C]   token-shift mixes
    blocks.i.att.w0 [1,1,C]  w1 [C,Dw]  w2 [Dw,C]   decay LoRA
    blocks.i.att.a0 [1,1,C]  a1 [C,Da]  a2 [Da,C]   in-context learning rate
    blocks.i.att.v0 [1,1,C]  v1 [C,Dv]  v2 [Dv,C]   value residual (i > 0;
                                                    may be absent for i == 0)
    blocks.i.att.g1 [C,Dg]   g2 [Dg,C]              output gate
    blocks.i.att.k_k, k_a [1,1,C]   r_k [H,N]
    blocks.i.att.{receptance,key,value,output}.weight [C,C]  (torch Linear:
                                                    [out, in], y = W @ x)
    blocks.i.att.ln_x.{weight,bias} [C]     per-head GroupNorm
    blocks.i.ffn.x_k [1,1,C]  key.weight [F,C]  value.weight [C,F]
    ln_out.{weight,bias} [C]   head.weight [V, C]

DeepEmbed releases (RWKV-7a, e.g. "rwkv7a-g1b-0.1b"; ChatRWKV runs them with
RWKV_DE_VERSION=1) add to every block's channel mix, with D = 32:

    blocks.i.ffn.s_emb.weight    [V, D*D]   a per-token D x D matrix
    blocks.i.ffn.s_emb_x.weight  [D*D, C]   its part linear in ln0(emb[token])
    blocks.i.ffn.s1 [C, D]   s2 [D, F]   s0 [F]   (any leading 1 dimensions)

and gate the squared-ReLU hidden layer by (((x @ s1) @ M) @ s2 + s0), where x
is the ln2 output (not token-shifted) and M = (s_emb[token] + s_emb_x @
ln0(emb[token])) viewed as [D, D] (row index first).  Nothing else changes.

All hyper-parameters are read off the shapes.  Every tensor is widened to
float64 before use, so bf16/fp16 checkpoints are evaluated exactly as
stored.

Per layer the state is:
    att_x  [C]      the previous token's ln1 output (time-mix token shift)
    wkv    [H,N,N]  the matrix-valued memory, S[h, i, j]: i = value channel,
                    j = key channel
    ffn_x  [C]      the previous token's ln2 output (channel-mix token shift)

Use as a module:      logits = forward(load_pth("m.pth"), [1, 2, 3])
Use from the shell:   rwkv7_reference.py --model m.pth --tokens 1,2,3 --out l.npy
"""

import argparse
import math
import re
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

# --- constants of the architecture -------------------------------------------

# LayerNorm epsilon (torch.nn.LayerNorm default), used by ln0, ln1, ln2, ln_out.
LN_EPS = 1e-5
# Epsilon of the per-head GroupNorm on the wkv read-out (att.ln_x).  It is a
# fixed constant of RWKV-7, not derived from the head size.
GN_EPS = 64e-5
# Lower bound of the L2 norm when kk is normalised per head
# (torch.nn.functional.normalize default).
KK_EPS = 1e-12
# The decay is w = exp(-exp(-0.5) * sigmoid(d)), equivalently
# exp(-exp(-softplus(-d) - 0.5)): a per-channel factor in (exp(-e^-0.5), 1).
DECAY_SCALE = math.exp(-0.5)


@dataclass
class Config:
    n_layer: int
    n_embd: int        # C
    n_head: int        # H
    head_size: int     # N (C == H * N)
    vocab_size: int    # V
    d_decay: int       # LoRA rank of w1/w2
    d_aaa: int         # LoRA rank of a1/a2
    d_mv: int          # LoRA rank of v1/v2 (0 if the model has a single layer)
    d_gate: int        # LoRA rank of g1/g2
    d_ffn: int         # F
    d_deep_embed: int = 0  # D of DeepEmbed (0: a plain x070 model)


# --- loading -----------------------------------------------------------------

def load_pth(path):
    """Loads an official .pth checkpoint into {name: float64 numpy array}."""
    import torch  # only needed for reading .pth files
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch without the weights_only argument
        sd = torch.load(path, map_location="cpu")
    return {name: t.detach().to(torch.float64).numpy() for name, t in sd.items()}


def infer_config(weights):
    """Reads the hyper-parameters off the tensor shapes."""
    layer_ids = [int(m.group(1)) for m in
                 (re.match(r"blocks\.(\d+)\.", name) for name in weights) if m]
    if not layer_ids:
        raise ValueError("no blocks.N.* tensors: not an RWKV checkpoint")
    n_layer = max(layer_ids) + 1
    vocab_size, n_embd = np.shape(weights["emb.weight"])
    n_head, head_size = np.shape(weights["blocks.0.att.r_k"])
    if n_head * head_size != n_embd:
        raise ValueError(f"r_k shape {n_head}x{head_size} does not match C={n_embd}")
    d_mv = 0
    for i in range(n_layer):
        if f"blocks.{i}.att.v1" in weights:
            d_mv = np.shape(weights[f"blocks.{i}.att.v1"])[1]
            break
    d_deep_embed = 0
    if "blocks.0.ffn.s1" in weights:
        d_deep_embed = _squeezed(weights["blocks.0.ffn.s1"])[-1]
    cfg = Config(
        d_deep_embed=d_deep_embed,
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, head_size=head_size,
        vocab_size=vocab_size,
        d_decay=np.shape(weights["blocks.0.att.w1"])[1],
        d_aaa=np.shape(weights["blocks.0.att.a1"])[1],
        d_mv=d_mv,
        d_gate=np.shape(weights["blocks.0.att.g1"])[1],
        d_ffn=np.shape(weights["blocks.0.ffn.key.weight"])[0],
    )
    _check_shapes(weights, cfg)
    return cfg


def _squeezed(a):
    """The shape without leading 1s (the official loaders squeeze every tensor)."""
    shape = list(np.shape(a))
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def _expected_shapes(cfg):
    """Official shapes of every tensor the forward pass reads."""
    C, V, F = cfg.n_embd, cfg.vocab_size, cfg.d_ffn
    vec = (1, 1, C)
    shapes = {
        "emb.weight": (V, C),
        "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,),
        "ln_out.weight": (C,), "ln_out.bias": (C,),
        "head.weight": (V, C),
    }
    for i in range(cfg.n_layer):
        b = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            shapes[b + ln + ".weight"] = (C,)
            shapes[b + ln + ".bias"] = (C,)
        att = b + "att."
        for m in "rwkvag":
            shapes[att + "x_" + m] = vec
        shapes.update({
            att + "w0": vec, att + "w1": (C, cfg.d_decay), att + "w2": (cfg.d_decay, C),
            att + "a0": vec, att + "a1": (C, cfg.d_aaa), att + "a2": (cfg.d_aaa, C),
            att + "g1": (C, cfg.d_gate), att + "g2": (cfg.d_gate, C),
            att + "k_k": vec, att + "k_a": vec,
            att + "r_k": (cfg.n_head, cfg.head_size),
            att + "receptance.weight": (C, C), att + "key.weight": (C, C),
            att + "value.weight": (C, C), att + "output.weight": (C, C),
            att + "ln_x.weight": (C,), att + "ln_x.bias": (C,),
            b + "ffn.x_k": vec,
            b + "ffn.key.weight": (F, C), b + "ffn.value.weight": (C, F),
        })
        if i > 0:  # layer 0 has no value residual
            shapes.update({att + "v0": vec, att + "v1": (C, cfg.d_mv),
                           att + "v2": (cfg.d_mv, C)})
        D = cfg.d_deep_embed
        if D:
            ffn = b + "ffn."
            shapes.update({ffn + "s_emb.weight": (V, D * D), ffn + "s_emb_x.weight": (D * D, C),
                           ffn + "s1": (C, D), ffn + "s2": (D, F), ffn + "s0": (F,)})
    return shapes


def _check_shapes(weights, cfg):
    for name, shape in _expected_shapes(cfg).items():
        if name not in weights:
            raise KeyError(f"missing tensor {name}")
        got = tuple(np.shape(weights[name]))
        # [1,1,C] vectors are also accepted squeezed to [C]; DeepEmbed's
        # s0/s1/s2 with any leading 1s.
        deep = ".ffn.s" in name and not name.endswith(".weight")
        if got != shape and not (len(shape) == 3 and got == (shape[2],)) and \
                not (deep and _squeezed(weights[name]) == shape):
            raise ValueError(f"{name}: shape {got}, expected {shape}")


def _prepare(weights, cfg):
    """float64 copies, with [1,1,C] vectors flattened to [C]."""
    def get(name):  # a vector: [C] or [1,1,C] -> [C]
        return np.asarray(weights[name], dtype=np.float64).reshape(-1)

    def lin(name):  # a matrix as stored: torch Linear weights are [out, in]
        return np.asarray(weights[name], dtype=np.float64)

    model = SimpleNamespace(
        emb=lin("emb.weight"),
        ln0=(get("blocks.0.ln0.weight"), get("blocks.0.ln0.bias")),
        ln_out=(get("ln_out.weight"), get("ln_out.bias")),
        head=lin("head.weight"),
        layers=[],
    )
    for i in range(cfg.n_layer):
        b, att, ffn = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        layer = SimpleNamespace(
            ln1=(get(b + "ln1.weight"), get(b + "ln1.bias")),
            ln2=(get(b + "ln2.weight"), get(b + "ln2.bias")),
            x_r=get(att + "x_r"), x_w=get(att + "x_w"), x_k=get(att + "x_k"),
            x_v=get(att + "x_v"), x_a=get(att + "x_a"), x_g=get(att + "x_g"),
            w0=get(att + "w0"), w1=lin(att + "w1"), w2=lin(att + "w2"),
            a0=get(att + "a0"), a1=lin(att + "a1"), a2=lin(att + "a2"),
            g1=lin(att + "g1"), g2=lin(att + "g2"),
            k_k=get(att + "k_k"), k_a=get(att + "k_a"),
            r_k=lin(att + "r_k").reshape(cfg.n_head, cfg.head_size),
            W_r=lin(att + "receptance.weight"), W_k=lin(att + "key.weight"),
            W_v=lin(att + "value.weight"), W_o=lin(att + "output.weight"),
            ln_x=(get(att + "ln_x.weight"), get(att + "ln_x.bias")),
            ffn_x_k=get(ffn + "x_k"),
            ffn_key=lin(ffn + "key.weight"), ffn_value=lin(ffn + "value.weight"),
        )
        if i > 0:
            layer.v0 = get(att + "v0")
            layer.v1 = lin(att + "v1")
            layer.v2 = lin(att + "v2")
        if cfg.d_deep_embed:
            D, C, F = cfg.d_deep_embed, cfg.n_embd, cfg.d_ffn
            layer.s_emb = lin(ffn + "s_emb.weight")            # [V, D*D]
            layer.s_emb_x = lin(ffn + "s_emb_x.weight")        # [D*D, C]
            layer.s1 = lin(ffn + "s1").reshape(C, D)
            layer.s2 = lin(ffn + "s2").reshape(D, F)
            layer.s0 = get(ffn + "s0")
        model.layers.append(layer)
    return model


# --- building blocks -----------------------------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(x, weight, bias):
    mean = x.mean()
    var = ((x - mean) ** 2).mean()          # biased variance, as torch
    return (x - mean) / np.sqrt(var + LN_EPS) * weight + bias


def group_norm(y, weight, bias):
    """Per-head normalisation of y [H, N], returned flattened to [C]."""
    mean = y.mean(axis=1, keepdims=True)
    var = ((y - mean) ** 2).mean(axis=1, keepdims=True)
    return ((y - mean) / np.sqrt(var + GN_EPS)).reshape(-1) * weight + bias


def token_shift_mix(x, x_prev, mix):
    """x + (x_prev - x) * mix: mix = 0 keeps the current token, 1 the previous."""
    return x + (x_prev - x) * mix


def decay(d):
    """Per-channel decay factor from the pre-activation d = w0 + LoRA(x)."""
    return np.exp(-DECAY_SCALE * sigmoid(d))


def l2_normalize_heads(x):
    """x [H, N] divided by each head's L2 norm (floored at KK_EPS)."""
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norm, KK_EPS)


# --- the two mixers --------------------------------------------------------------

def time_mix(p, cfg, layer_id, x, state, v_first):
    """Attention-like block.  x is the ln1 output [C].

    Returns (output [C], v_first); updates state.att_x / state.wkv in place.
    """
    H, N = cfg.n_head, cfg.head_size
    x_prev = state.att_x[layer_id]

    xr = token_shift_mix(x, x_prev, p.x_r)
    xw = token_shift_mix(x, x_prev, p.x_w)
    xk = token_shift_mix(x, x_prev, p.x_k)
    xv = token_shift_mix(x, x_prev, p.x_v)
    xa = token_shift_mix(x, x_prev, p.x_a)
    xg = token_shift_mix(x, x_prev, p.x_g)

    r = p.W_r @ xr
    k = p.W_k @ xk
    v = p.W_v @ xv
    w = decay(p.w0 + np.tanh(xw @ p.w1) @ p.w2)         # in (0, 1)
    a = sigmoid(p.a0 + (xa @ p.a1) @ p.a2)              # in-context learning rate
    g = sigmoid(xg @ p.g1) @ p.g2                       # gate (no sigmoid after g2)

    # Removal key: k scaled by k_k, unit length per head (before k is modified).
    kk = l2_normalize_heads((k * p.k_k).reshape(H, N))
    # Replacement key: k scaled towards k * a by k_a.
    k = k * (1.0 + (a - 1.0) * p.k_a)

    # Value residual: layer 0 publishes its v; later layers blend towards it.
    if layer_id == 0:
        v_first = v
    else:
        v = v + (v_first - v) * sigmoid(p.v0 + (xv @ p.v1) @ p.v2)

    r_h, w_h, k_h, v_h, a_h = (t.reshape(H, N) for t in (r, w, k, v, a))

    # State transition, per head, with S[i, j] (i: value channel, j: key channel):
    #   S' = S * diag(w) - (S kk) (kk * a)^T + v k^T
    # The decay and the removal term both act on the old S.
    S = state.wkv[layer_id]
    S_kk = np.einsum("hij,hj->hi", S, kk)
    S = (S * w_h[:, None, :]
         - S_kk[:, :, None] * (kk * a_h)[:, None, :]
         + v_h[:, :, None] * k_h[:, None, :])
    state.wkv[layer_id] = S

    y = np.einsum("hij,hj->hi", S, r_h)                 # read-out [H, N]
    y = group_norm(y, *p.ln_x)
    # "Bonus": the current token's own value, weighted per head by <r, k * r_k>.
    bonus = (r_h * k_h * p.r_k).sum(axis=1, keepdims=True) * v_h
    y = y + bonus.reshape(-1)

    state.att_x[layer_id] = x
    return p.W_o @ (y * g), v_first


def deep_embed_gate(p, cfg, x, token, x0):
    """DeepEmbed's per-token gate [F] on the hidden layer.

    x: the ln2 output [C]; x0: ln0(emb[token]), the block input of layer 0.
    The token's D x D matrix is a table row plus a linear function of x0.
    """
    D = cfg.d_deep_embed
    m = (p.s_emb[token] + p.s_emb_x @ x0).reshape(D, D)
    return ((x @ p.s1) @ m) @ p.s2 + p.s0


def channel_mix(p, cfg, layer_id, x, state, token=None, x0=None):
    """Feed-forward block.  x is the ln2 output [C]; updates state.ffn_x."""
    xk = token_shift_mix(x, state.ffn_x[layer_id], p.ffn_x_k)
    hidden = np.maximum(p.ffn_key @ xk, 0.0) ** 2       # squared ReLU
    if cfg.d_deep_embed:
        hidden = hidden * deep_embed_gate(p, cfg, x, token, x0)
    state.ffn_x[layer_id] = x
    return p.ffn_value @ hidden


# --- the model -------------------------------------------------------------------

def init_state(cfg):
    """The zero state that every sequence starts from."""
    C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
    return SimpleNamespace(
        att_x=[np.zeros(C) for _ in range(cfg.n_layer)],
        wkv=[np.zeros((H, N, N)) for _ in range(cfg.n_layer)],
        ffn_x=[np.zeros(C) for _ in range(cfg.n_layer)],
    )


def forward_token(model, cfg, token, state):
    """One step of the recurrence: logits [V] for `token`, state updated."""
    x0 = layer_norm(model.emb[token], *model.ln0)
    x = x0
    v_first = None
    for i, p in enumerate(model.layers):
        dx, v_first = time_mix(p, cfg, i, layer_norm(x, *p.ln1), state, v_first)
        x = x + dx
        x = x + channel_mix(p, cfg, i, layer_norm(x, *p.ln2), state, token, x0)
    return model.head @ layer_norm(x, *model.ln_out)


def forward(weights, tokens, state=None):
    """Logits [T, V] (float64) after each of `tokens`.

    weights: {name: array} in the official layout (see load_pth).
    state:   None to start from zeros, or a state from init_state(), which is
             then updated in place (so a sequence can be fed in pieces).
    """
    cfg = infer_config(weights)
    model = _prepare(weights, cfg)
    if state is None:
        state = init_state(cfg)
    tokens = [int(t) for t in tokens]
    for t in tokens:
        if not 0 <= t < cfg.vocab_size:
            raise ValueError(f"token {t} outside vocabulary of {cfg.vocab_size}")
    logits = np.empty((len(tokens), cfg.vocab_size))
    for pos, t in enumerate(tokens):
        logits[pos] = forward_token(model, cfg, t, state)
    return logits


def parse_tokens(text):
    return [int(s) for s in text.replace("\n", ",").split(",") if s.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="official-layout .pth checkpoint")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--tokens-file", help="file with comma-separated token ids")
    ap.add_argument("--out", required=True, help="output .npy: float32 logits [T, V]")
    args = ap.parse_args(argv)
    if (args.tokens is None) == (args.tokens_file is None):
        ap.error("give exactly one of --tokens and --tokens-file")
    text = args.tokens if args.tokens is not None else open(args.tokens_file).read()
    tokens = parse_tokens(text)

    weights = load_pth(args.model)
    cfg = infer_config(weights)
    print(f"{args.model}: {cfg}", file=sys.stderr)
    logits = forward(weights, tokens)
    np.save(args.out, logits.astype(np.float32))
    print(f"wrote {args.out}: logits [{len(tokens)}, {cfg.vocab_size}]", file=sys.stderr)


if __name__ == "__main__":
    main()
