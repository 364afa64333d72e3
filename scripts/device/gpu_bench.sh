#!/usr/bin/env bash
# The GPU benchmarks, one call on a lent machine (see scripts/device/prepare.sh):
#   run(command="bash scripts/device/gpu_bench.sh", carry=[".gl", ".gpu"])
# Logs land in $OUT. Every step has its own time limit so that one slow step cannot take the whole lease.
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -dc .gpu/embjob.xz >/tmp/embjob && chmod +x /tmp/embjob
E=/tmp/embjob; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
mkdir -p /tmp/minilm && cp -r .gpu/minilm16/. /tmp/minilm/ && python3 - <<'PY'
import torch
from safetensors.torch import load_file, save_file
t = load_file("/tmp/minilm/model.safetensors")
save_file({k: v.float().contiguous() for k, v in t.items()}, "/tmp/minilm/model.safetensors", metadata={"format": "pt"})
PY
nvidia-smi -L; python3 -c 'import torch, sentence_transformers as s; print("torch", torch.__version__, "st", s.__version__)'
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; echo "== $name rc ${PIPESTATUS[0]}"; }
STEPS=${STEPS:-parity encode train catalogue profile neighbors}
for s in $STEPS; do case $s in
parity)
  # The food job on both backends: per-epoch losses and the evaluation side by side (GPU within tolerance of CPU).
  for b in cpu gpu; do step "food_$b" 120 $E run pipelines/food.toml --backend $b --output /tmp/food_$b; done
  python3 - <<'PY' 2>&1 | tee "$OUT/parity.log"
import pyarrow.parquet as pq
m = {b: pq.read_table(f"/tmp/food_{b}/latest/metrics.parquet").to_pandas() for b in ("cpu", "gpu")}
k = ["stage", "metric", "index"]
j = m["cpu"].merge(m["gpu"], on=k, suffixes=("_cpu", "_gpu"))
j = j[j.stage.isin(["train", "eval_model", "pca", "similarity"]) & ~j.metric.str.contains("seconds|per_second")]
j["diff"] = (j.value_cpu - j.value_gpu).abs()
print(j.sort_values("diff", ascending=False).head(12).to_string())
print("max |cpu - gpu| over", len(j), "metrics:", j["diff"].max())
PY
  ;;
encode)
  step encode 200 $E bench encode --model /tmp/minilm --backend gpu --peer-device cuda --st-peer .gpu/ref_encode.py \
    --ort-peer /nonexistent --repeats 3 --text "lee=pipelines/data/lee_docs.parquet:text" \
    --text "titles=.gpu/movielens_movies.parquet:title"
  step encode_big 120 $E bench encode --model /tmp/minilm --backend gpu --batch-tokens 65536 --peer-device cuda \
    --peer-batch 256 --st-peer .gpu/ref_encode.py --ort-peer /nonexistent --repeats 3 \
    --text "lee=pipelines/data/lee_docs.parquet:text" --text "titles=.gpu/movielens_movies.parquet:title" ;;
train)
  for c in ml_256 ml_4096 food_256 food_4096; do
    step "train_$c" 90 $E bench train --config .gpu/$c.toml --backend gpu --peer-device cuda --peer .gpu/ref_recommender.py --repeats 3
  done ;;
catalogue)
  # The sampled softmax against the full one at 10^4–10^6 items on the GPU (the CPU's figures are in the README), and
  # the food job with the sampled loss on both backends.
  step catalogue 240 $E bench catalogue --backend gpu --steps 100 --repeats 3
  for b in cpu gpu; do
    sed -e 's/^pooling = "mean"/pooling = "mean"\nloss = "sampled_softmax"\nnegatives = 40/' pipelines/food.toml > pipelines/food_sampled.tmp.toml
    step "food_sampled_$b" 120 $E run pipelines/food_sampled.tmp.toml --backend $b --output /tmp/food_sampled_$b
  done ;;
profile)
  step profile_train 60 env EMBJOB_GPU_PROFILE=1 $E bench train --config .gpu/ml_256.toml --backend gpu --python none --repeats 1
  step profile_encode 60 env EMBJOB_GPU_PROFILE=1 $E bench encode --model /tmp/minilm --backend gpu --python none --repeats 1 \
    --text "lee=pipelines/data/lee_docs.parquet:text" ;;
neighbors)
  # The cosine top-10 of 200,000 items on the host's cores and on the GPU's TopK kernel (equal lists counted).
  step neighbors 240 $E bench neighbors --items 200000 --repeats 1 ;;
esac; done
echo "== summary"; for f in "$OUT"/*.log; do echo "-- $f"; grep '^|' "$f"; done
