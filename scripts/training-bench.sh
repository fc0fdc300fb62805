#!/usr/bin/env bash
# Training speed, Minnow against PyTorch on the same shape, batch and context, 2 threads each.
# Installs Debian's python3-torch and libopenblas0-pthread when torch is missing (the bench's dependency, not the
# project's). Usage: scripts/training-bench.sh [default|smollm2-135m] [steps]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shape="${1:-default}"
steps="${2:-20}"
py=/usr/bin/python3 # Debian's, where python3-torch installs (not a pyenv shim)
if ! "$py" -c "import torch" 2>/dev/null; then
    apt-get install -y --no-install-recommends python3-torch libopenblas0-pthread >&2
fi
case "$shape" in
    default) args=(--vocab 2048 --hidden 256 --layers 4 --heads 4 --kv-heads 2 --ffn 512 --ctx 128 --batch 16) ;;
    smollm2-135m) args=(--vocab 49152 --hidden 576 --layers 30 --heads 9 --kv-heads 3 --ffn 1536 --ctx 128 --batch 4) ;;
    *) echo "unknown shape $shape (default, smollm2-135m)" >&2; exit 1 ;;
esac
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dotnet build "$root/src/Minnow.Cli" -c Release >/dev/null
# Minnow trains a byte-level BPE tokenizer of --vocab tokens first; the text only has to be long enough for it.
text="$root/models/default/held-out.txt"
MINNOW_THREADS=2 dotnet run --project "$root/src/Minnow.Cli" -c Release --no-build -- train --data "$text" --out "$work/model" \
    "${args[@]}" --steps "$steps" --checkpoint-every 100000 --held-out 0.01 --json > "$work/minnow.json"
# The tokenizer trained on a short text may hold fewer tokens than asked: PyTorch gets the vocabulary Minnow trained.
vocab="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$work/minnow.json")"
"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"engine":"minnow","parameters":d["parameters"],"vocab":d["vocab_size"],"tokens_per_second":d["tokens_per_second"],"seconds":d["seconds"]}))' "$work/minnow.json"
"$py" "$root/scripts/training_bench_torch.py" "${args[@]}" --vocab "$vocab" --steps "$steps" --threads 2
