#!/bin/sh
# Training speed of `rwkv train`'s step (forward, backward, AdamW) against
# PyTorch on the same CPU running the same RWKV-7 (the project's plain-PyTorch
# model of the official trainer's math, tests/reference/fixtures_train.py
# --bench), same shape, batch and thread count, measured alternately in one run.
#   benchmarks/train_vs_pytorch.sh [BUILD_DIR] [ROUNDS]
# Shape via the environment: LAYERS EMBD HEAD VOCAB CTX BATCH STEPS THREADS.
set -eu
build=${1:-build}
rounds=${2:-2}
here=$(dirname "$0")
L=${LAYERS:-6} C=${EMBD:-512} N=${HEAD:-64} V=${VOCAB:-65536} T=${CTX:-512} B=${BATCH:-1}
S=${STEPS:-2} J=${THREADS:-2}
ours=0 theirs=0
for r in $(seq "$rounds"); do
  o=$("$build/rwkv" bench --train --json --threads "$J" --n-layer "$L" --n-embd "$C" --head-size "$N" --vocab "$V" \
    --ctx-len "$T" --train-batch "$B" --steps "$S" | sed -E 's/.*"train_tokens_per_s":([0-9.e+-]+).*/\1/')
  p=$(/usr/bin/python3 "$here/../tests/reference/fixtures_train.py" --bench --layers "$L" --embd "$C" --head-size "$N" \
    --vocab "$V" --ctx "$T" --batch "$B" --steps "$S" --threads "$J" | sed -nE 's/.* ([0-9.]+) tokens\/s$/\1/p')
  echo "round $r: rwkv $o tokens/s, pytorch $p tokens/s"
  ours=$(awk "BEGIN{print $ours + $o}") theirs=$(awk "BEGIN{print $theirs + $p}")
done
awk "BEGIN{printf \"L$L C$C head $N vocab $V ctx $T batch $B threads $J: rwkv %.1f tokens/s, pytorch %.1f tokens/s, ratio %.2fx\\n\", $ours / $rounds, $theirs / $rounds, $ours / $theirs}"
