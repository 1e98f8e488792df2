#!/usr/bin/env python3
"""Reference gradients for the C++ RWKV-7 trainer (run by make_fixtures.py),
and a PyTorch CPU speed reference for it.

    fixtures_train.py --shared SHARED_DIR --out OUT_DIR
    fixtures_train.py --bench [--layers 4 --embd 256 --head-size 64 --vocab 65536
                               --ctx 128 --batch 4 --steps 3 --threads 2]

The model here is this project's own plain-PyTorch RWKV-7 written from the
math of the official trainer's "slow pytorch version" (RWKV-LM
RWKV-v7/train_temp/src/model.py, RWKV_Tmix_x070 / RWKV_CMix_x070 comments,
with the decay exp(-exp(-0.5) sigmoid(w)) of its rwkv7_clampw kernel) and the
per-token state loop of RWKV-v7/rwkv_v7_demo.py's non-CUDA path: autograd
gives the gradients, so they are independent of the C++ backward.  It also
takes an initial state (per layer: time-mix shift [C], wkv [H, N, N],
channel-mix shift [C], the engine's layout), which the official model lacks,
so that the state gradient is checked too.

Fixture written into OUT_DIR/train/ (deterministic):

  grad-L2-C16.pth   float32 tensors:
      every model tensor in the official layout (random weights), plus
      "test.tokens" / "test.targets" [B, T] (ids as floats; -1 = ignored),
      "test.state" [n_layer * (2C + H N N)], "test.loss" [1] (float64 loss
      rounded to float32 after the float64 computation),
      "grad.<name>" for every model tensor and "grad.state": d(mean CE)/d(.)
      computed in float64 by autograd, stored as float32.

--bench times forward + backward + AdamW of the same model in float32 on the
CPU (torch.set_num_threads(--threads)), on random tokens, and prints tokens/s.
"""

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F

LN_EPS = 1e-5
GN_EPS = 64e-5


def shapes(L, C, N, V, Fd, dw, da, dv, dg):
    """Official state-dict names and shapes, in the official order."""
    H = C // N
    out = [("emb.weight", (V, C))]
    vec = (1, 1, C)
    for i in range(L):
        b = f"blocks.{i}."
        out += [(b + "ln1.weight", (C,)), (b + "ln1.bias", (C,)), (b + "ln2.weight", (C,)), (b + "ln2.bias", (C,))]
        if i == 0:
            out += [(b + "ln0.weight", (C,)), (b + "ln0.bias", (C,))]
        a = b + "att."
        out += [(a + "x_" + m, vec) for m in "rwkvag"]
        out += [(a + "w1", (C, dw)), (a + "w2", (dw, C)), (a + "w0", vec),
                (a + "a1", (C, da)), (a + "a2", (da, C)), (a + "a0", vec),
                (a + "v1", (C, dv)), (a + "v2", (dv, C)), (a + "v0", vec),
                (a + "g1", (C, dg)), (a + "g2", (dg, C)),
                (a + "k_k", vec), (a + "k_a", vec), (a + "r_k", (H, N)),
                (a + "receptance.weight", (C, C)), (a + "key.weight", (C, C)),
                (a + "value.weight", (C, C)), (a + "output.weight", (C, C)),
                (a + "ln_x.weight", (C,)), (a + "ln_x.bias", (C,)),
                (b + "ffn.x_k", vec), (b + "ffn.key.weight", (Fd, C)), (b + "ffn.value.weight", (C, Fd))]
    out += [("ln_out.weight", (C,)), ("ln_out.bias", (C,)), ("head.weight", (V, C))]
    return out


def random_weights(spec, gen):
    """Weights in trained-model ranges, so every path carries gradient."""
    w = {}
    for name, shape in spec:
        u = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
        if ".x_" in name:
            t = 0.5 + 0.5 * u
        elif "ln" in name and name.endswith(".weight"):
            t = 1 + 0.3 * u
        elif name.endswith("k_a"):
            t = 1 + 0.2 * u
        elif len(shape) == 2 and min(shape) > 1:
            t = u * 1.5 / math.sqrt(shape[1])
        else:
            t = 0.5 * u
        w[name] = t.float()
    return w


def forward(P, L, N, tokens, state):
    """logits [B, T, V] after tokens [B, T] from `state` (shared by the batch)."""
    B, T = tokens.shape
    V, C = P["emb.weight"].shape
    H = C // N
    per_layer = 2 * C + H * N * N
    x = F.embedding(tokens, P["emb.weight"])
    x = F.layer_norm(x, (C,), P["blocks.0.ln0.weight"], P["blocks.0.ln0.bias"], LN_EPS)
    v_first = None
    for i in range(L):
        b, a = f"blocks.{i}.", f"blocks.{i}.att."
        s = state[i * per_layer:(i + 1) * per_layer]
        att_x, wkv0, ffn_x = s[:C], s[C:C + H * N * N].view(H, N, N), s[C + H * N * N:]

        xx = F.layer_norm(x, (C,), P[b + "ln1.weight"], P[b + "ln1.bias"], LN_EPS)
        shifted = torch.cat([att_x.view(1, 1, C).expand(B, 1, C), xx[:, :-1]], dim=1) - xx
        xr, xw, xk, xv, xa, xg = (xx + shifted * P[a + "x_" + m] for m in "rwkvag")
        r = xr @ P[a + "receptance.weight"].T
        decay = torch.exp(-math.exp(-0.5) * torch.sigmoid(P[a + "w0"] + torch.tanh(xw @ P[a + "w1"]) @ P[a + "w2"]))
        k = xk @ P[a + "key.weight"].T
        v = xv @ P[a + "value.weight"].T
        if i == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(P[a + "v0"] + (xv @ P[a + "v1"]) @ P[a + "v2"])
        aa = torch.sigmoid(P[a + "a0"] + (xa @ P[a + "a1"]) @ P[a + "a2"])
        g = torch.sigmoid(xg @ P[a + "g1"]) @ P[a + "g2"]
        kk = F.normalize((k * P[a + "k_k"]).view(B, T, H, N), dim=-1, p=2.0).view(B, T, C)
        k = k * (1 + (aa - 1) * P[a + "k_a"])

        # S = S diag(w) + (S a)(b)^T + v k^T with a = -kk, b = kk * aa; y = S r
        rr, ww, kq, vq = (t.view(B, T, H, N) for t in (r, decay, k, v))
        ra, rb = (-kk).view(B, T, H, N), (kk * aa).view(B, T, H, N)
        S = wkv0.unsqueeze(0).expand(B, H, N, N)
        ys = []
        for t in range(T):
            S = (S * ww[:, t, :, None, :] + (S @ ra[:, t, :, :, None]) @ rb[:, t, :, None, :]
                 + vq[:, t, :, :, None] @ kq[:, t, :, None, :])
            ys.append((S @ rr[:, t, :, :, None]).squeeze(-1))
        y = torch.stack(ys, dim=1).reshape(B * T, C)

        y = F.group_norm(y, H, P[a + "ln_x.weight"], P[a + "ln_x.bias"], GN_EPS).view(B, T, C)
        y = y + ((rr * kq * P[a + "r_k"]).sum(dim=-1, keepdim=True) * vq).view(B, T, C)
        x = x + (y * g) @ P[a + "output.weight"].T

        xx = F.layer_norm(x, (C,), P[b + "ln2.weight"], P[b + "ln2.bias"], LN_EPS)
        shifted = torch.cat([ffn_x.view(1, 1, C).expand(B, 1, C), xx[:, :-1]], dim=1) - xx
        kx = xx + shifted * P[b + "ffn.x_k"]
        x = x + torch.relu(kx @ P[b + "ffn.key.weight"].T) ** 2 @ P[b + "ffn.value.weight"].T
    x = F.layer_norm(x, (C,), P["ln_out.weight"], P["ln_out.bias"], LN_EPS)
    return x @ P["head.weight"].T


def make_gradient_fixture(out_dir):
    # The C++ test's tiny shape: every dimension distinct.
    L, C, N, V, Fd, dw, da, dv, dg = 2, 16, 8, 13, 24, 4, 5, 3, 6
    B, T = 2, 7
    H = C // N
    gen = torch.Generator().manual_seed(20240611)
    spec = shapes(L, C, N, V, Fd, dw, da, dv, dg)
    weights = random_weights(spec, gen)
    state = (torch.rand(L * (2 * C + H * N * N), generator=gen, dtype=torch.float64) - 0.5).float()
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[0, 3] = -1

    P = {n: t.double().requires_grad_(True) for n, t in weights.items()}
    s = state.double().requires_grad_(True)
    logits = forward(P, L, N, tokens, s)
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
    loss.backward()

    out = dict(weights)
    out["test.tokens"] = tokens.float()
    out["test.targets"] = targets.float()
    out["test.state"] = state
    out["test.loss"] = loss.detach().float().reshape(1)
    for n, p in P.items():  # layer 0's value-residual tensors are unused: zero gradient
        out["grad." + n] = (p.grad if p.grad is not None else torch.zeros_like(p)).float()
    out["grad.state"] = s.grad.float()
    os.makedirs(os.path.join(out_dir, "train"), exist_ok=True)
    torch.save(out, os.path.join(out_dir, "train", "grad-L2-C16.pth"))


def bench(args):
    torch.set_num_threads(args.threads)
    L, C, N, V = args.layers, args.embd, args.head_size, args.vocab
    rank = lambda f: max(32, int(round(f * C ** 0.5 / 32)) * 32)  # official LoRA ranks
    spec = shapes(L, C, N, V, 4 * C, rank(2.5), rank(2.5), rank(1.7), rank(5.0))
    gen = torch.Generator().manual_seed(1)
    P = {n: t.requires_grad_(True) for n, t in random_weights(spec, gen).items()}
    state = torch.zeros(L * (2 * C + (C // N) * N * N))
    opt = torch.optim.AdamW(P.values(), lr=1e-4, betas=(0.9, 0.99), eps=1e-18, weight_decay=0.0)
    tokens = torch.randint(0, V, (args.batch, args.ctx + 1), generator=gen)
    times = []
    for step in range(args.steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        opt.zero_grad()
        logits = forward(P, L, N, tokens[:, :-1], state)
        loss = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(P.values(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        print(f"step {step}: loss {loss.item():.4f}, {times[-1]:.3f} s", flush=True)
    per_step = sum(times[1:]) / max(1, len(times) - 1)
    print(f"pytorch {torch.__version__} threads {args.threads}: L{L} C{C} hs{N} V{V} batch {args.batch} "
          f"ctx {args.ctx}: {per_step:.3f} s/step, {args.batch * args.ctx / per_step:.1f} tokens/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared")
    ap.add_argument("--out")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.bench:
        bench(args)
        return
    if not args.out:
        ap.error("--out is required")
    make_gradient_fixture(args.out)


if __name__ == "__main__":
    main()
