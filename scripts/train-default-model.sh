#!/usr/bin/env bash
# Reproduces models/default: a small Llama-architecture model trained from scratch by `minnow train` on the
# King James Version of the Bible (public domain), taken from Debian's bible-kjv-text package and extracted
# with its bible-kjv reader, one verse per line without verse references.
#
#   scripts/train-default-model.sh [OUTPUT_FOLDER]     (default: models/default)
#
# Set MINNOW=/path/to/Minnow.Cli to use an already built CLI instead of `dotnet run -c Release`.
# Training is deterministic for any thread count: every kernel sums in
# a fixed order, so the same text, options and seed give bit-identical weights on the same kind of CPU.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/models/default}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! command -v bible >/dev/null 2>&1; then
    echo "installing Debian's bible-kjv (reader) and bible-kjv-text (the KJV text)..." >&2
    apt-get install -y bible-kjv bible-kjv-text >&2
fi

# One verse per line; strip the "Ge1:1 " references.
bible -f "Gen1:1-Rev22:21" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$work/kjv.txt"
echo "kjv.txt: $(wc -c < "$work/kjv.txt") bytes, sha256 $(sha256sum "$work/kjv.txt" | cut -d' ' -f1)" >&2
expected=b5c4940bcfeee072c0935b5200d0f9d88a00a0199cb0961d16133458fcdfae5d
if [ "$(sha256sum "$work/kjv.txt" | cut -d' ' -f1)" != "$expected" ]; then
    echo "warning: the extracted text differs from the one models/default was trained on (sha256 $expected)" >&2
fi

if [ -n "${MINNOW:-}" ]; then
    minnow=("$MINNOW")
else
    minnow=(dotnet run -c Release --project "$root/src/Minnow.Cli" --)
fi

"${minnow[@]}" train --data "$work/kjv.txt" --out "$work/model" \
    --vocab 2048 --hidden 256 --layers 4 --heads 4 --kv-heads 2 --ffn 512 --ctx 128 \
    --batch 8 --steps 1000 --lr 2e-3 --seed 1 --held-out 0.05 --checkpoint-every 100 --json > "$work/summary.json"
cat "$work/summary.json"

mkdir -p "$out"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json held-out.txt training.json; do
    cp "$work/model/$f" "$out/$f"
done
echo "default model written to $out" >&2
