#!/bin/sh
# Retrains the project's default model, models/rwkv7-kjv-l4-c160-bytes.pth
# (see models/README.md): a byte-level RWKV-7 trained by `rwkv train` on the
# King James Bible as Debian's bible-kjv-text package ships it (public domain).
#   scripts/train-default-model.sh [BUILD_DIR] [WORK_DIR]
set -eu
build=${1:-build}
work=${2:-/tmp/rwkv-default-model}
mkdir -p "$work"
if ! command -v bible >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] && sudo= || sudo=sudo
  $sudo apt-get update && $sudo apt-get install -y bible-kjv
fi
# One verse per line, without chapter headings or verse numbers.
bible -l1000 "Gen1:1-Rev22:21" | sed -nE 's/^ +[0-9]+ //p' > "$work/kjv.txt"
"$build/rwkv" init -o "$work/init.pth" --n-layer 4 --n-embd 160 --vocab 256 --head-size 32 --seed 1
"$build/rwkv" train -m "$work/init.pth" --data "$work/kjv.txt" --tokenizer bytes --ctx-len 256 --batch 8 \
  --steps 1600 --lr 1e-3 --lr-final 1e-4 --warmup 50 --save-every 200 --save-dtype bf16 --val-fraction 0.01 \
  --log-every 10 --seed 7 -o "$work/rwkv7-kjv-l4-c160-bytes.pth"
echo "trained: $work/rwkv7-kjv-l4-c160-bytes.pth (copy it to models/ to make it the default)"
