#!/usr/bin/env python3
"""Derives the 16 levels of Q4_NL (src/core/quant.h, kQ4NlLevels).

Lloyd-Max iterations on blocks of 32 Gaussian weights, alternating:
  1. for every block, the scale d chosen as the engine's quantizer chooses it
     (the block's largest weight at c times the outermost level on either
     side, c in 0.80..1.10 in 11 steps; each candidate's assignment refined by
     least squares, d rounded to f16, re-assigned; least squared error wins);
  2. every level moved to the centroid of the weights assigned to it, in level
     units: L_j = sum(d x) / sum(d^2) over the weights at level j;
then the levels are normalised to an outermost magnitude of 127 and rounded
to int8. Run with Debian's /usr/bin/python3 (numpy); prints the table and the
relative RMS error of Q4_0 and of the table on fresh Gaussian blocks.
"""
import numpy as np


def f16(a):
    return a.astype(np.float16).astype(np.float32)


def nearest(t, levels):
    return np.searchsorted((levels[1:] + levels[:-1]) / 2, t)


def quantize(x, levels):
    """Per block: the chosen scale d and level indices."""
    mx = x[np.arange(len(x)), np.abs(x).argmax(1)]
    best = np.full(len(x), np.inf)
    best_d = np.zeros(len(x), np.float32)
    best_i = np.zeros(x.shape, np.int64)
    for outer in (levels[0], levels[-1]):
        for c in 0.80 + 0.03 * np.arange(11):
            d = mx / (outer * c)
            d = np.where(d == 0, 1e-30, d)
            q = levels[nearest(x / d[:, None], levels)]
            den = (q * q).sum(1)
            d = f16(np.where(den > 0, (x * q).sum(1) / np.where(den > 0, den, 1), 0))
            i = nearest(x / np.where(d == 0, 1e-30, d)[:, None], levels)
            err = ((d[:, None] * levels[i] - x) ** 2).sum(1)
            better = err < best
            best = np.where(better, err, best)
            best_d[better] = d[better]
            best_i[better] = i[better]
    return best_d, best_i


def rms(x, y):
    return np.sqrt(((x - y) ** 2).mean() / (x ** 2).mean())


def q4_0(x):
    mx = x[np.arange(len(x)), np.abs(x).argmax(1)]
    d = f16(mx / -8)
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0)
    return d[:, None] * (np.minimum(15, np.trunc(x * inv[:, None] + 8.5)) - 8)


def main():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 32)).astype(np.float32)
    levels = np.arange(-8, 8, dtype=np.float64) / 8
    for _ in range(40):
        d, i = quantize(x, levels)
        num = np.zeros(16)
        den = np.zeros(16)
        np.add.at(num, i.ravel(), (d[:, None] * x).ravel())
        np.add.at(den, i.ravel(), np.broadcast_to(d[:, None] ** 2, x.shape).ravel())
        levels = np.sort(np.where(den > 0, num / np.maximum(den, 1e-30), levels))
        levels /= np.abs(levels).max()
    table = np.round(levels * 127).astype(np.int64)
    print("levels:", ", ".join(str(v) for v in table))
    test = np.random.default_rng(7).standard_normal((20000, 32)).astype(np.float32)
    d, i = quantize(test, table.astype(np.float32))
    print(f"relative RMS error: q4_0 {rms(test, q4_0(test)):.5f}, table {rms(test, d[:, None] * table[i]):.5f}")


if __name__ == "__main__":
    main()
