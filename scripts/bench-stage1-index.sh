#!/usr/bin/env bash
# Stage 1 retrieval index on real data (docs/stage1.md, "Nearest neighbours"): the
# AlpacaEval pool searched for the HH-RLHF gold pairs with MiniLM embeddings, exact
# against HNSW settings, 2 workers. The first run embeds the pool (about 7 minutes on
# 2 cores); the others read the embeddings from the shared cache.
#   scripts/bench-stage1-index.sh [OUT]   (after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/synpref
D=../shared/data
O=${1:-/tmp/synpref-index-bench}
common=(--pool "$D/alpaca_eval_gpt4t_dev.parquet" --gold "$D/hh_rlhf_harmless_gold.parquet"
    --silver "$D/hh_rlhf_harmless_gold.parquet" --iterations 1
    --embedder encoder:../shared/models/all-MiniLM-L6-v2 --labeler humans --no-progress
    --cache "$O/cache" --index-recall-queries 1200 --workers 2)
for cfg in "exact:--index exact" "auto:" "hnsw2:--index hnsw --index-shards 2" \
    "hnsw2-ef16:--index hnsw --index-shards 2 --hnsw-ef-search 16" \
    "hnsw2-ef128:--index hnsw --index-shards 2 --hnsw-ef-search 128" "hnsw64:--index hnsw"; do
    name=${cfg%%:*}
    read -r -a flags <<< "${cfg#*:}"
    "$B" stage1 "${common[@]}" --out "$O/$name" "${flags[@]}" > /dev/null
    python3 -c "
import json; r = json.load(open('$O/$name/report.json')); it = r['iterations'][0]
print('$name', 'build_s=%.2f' % r['index']['build_s'], 'search_s=%.2f' % it['search_s'],
      'recall=%s' % it['index_recall'], 'retrieved=%d' % it['retrieved'])"
done
