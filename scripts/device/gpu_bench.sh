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
# Issue 26's comparison is the default (encode, parity16, pca, profile: about 6 minutes on an H200); the earlier
# stops' steps (parity train catalogue neighbors finetune) run when named, e.g. STEPS="parity train".
STEPS=${STEPS:-encode parity16 pca profile}
LEE=pipelines/data/lee_docs.parquet
SETS=(--text "lee=$LEE:text" --text "long=$LEE:text*20" --text "titles=.gpu/movielens_movies.parquet:title")
# The news job on the genuine model, its precision set by the first argument, its output in the second.
news() { sed -e 's#"data/#"../pipelines/data/#' -e 's#^model = .*#model = "/tmp/minilm"#' \
  -e "s#^batch_tokens = .*#batch_tokens = 8192\nprecision = \"$1\"#" pipelines/news.toml >".gpu/news_$1.toml"
  step "news_$1_$(basename "$2")" 120 $E run ".gpu/news_$1.toml" --backend gpu --output "$2"; }
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
  # Every tool on the same texts, tokenizing included: embjob f32 and f16 (tensor cores where the adapter has
  # cooperative matrices; run.json and the log say which ran) at 8,192- and 65,536-token batches, then
  # sentence-transformers f32 and f16 at batch 128 and 512 (the peers run once, with the first command).
  step encode_f32 240 $E bench encode --model /tmp/minilm --backend gpu --precision f32 --peer-device cuda \
    --ort-peer /nonexistent --repeats 3 "${SETS[@]}"
  step encode_f16 90 $E bench encode --model /tmp/minilm --backend gpu --precision f16 --python none --repeats 3 "${SETS[@]}"
  step encode_f32_65k 90 $E bench encode --model /tmp/minilm --backend gpu --precision f32 --batch-tokens 65536 \
    --python none --repeats 3 "${SETS[@]}"
  step encode_f16_65k 90 $E bench encode --model /tmp/minilm --backend gpu --precision f16 --batch-tokens 65536 \
    --python none --repeats 3 "${SETS[@]}" ;;
parity16)
  # The f16 contract on the genuine model (its f16-carried weights widened): sentence-transformers f32 as the
  # reference, embjob f32 and f16 (twice, for bit-identical reruns) through the news job.
  step st32 120 python3 scripts/peers/st_encode.py --model /tmp/minilm --parquet $LEE --device cuda --repeats 1 \
    --out /tmp/st32.parquet
  news f32 /tmp/news32; news f16 /tmp/news16; news f16 /tmp/news16b
  step f16_parity 60 python3 scripts/device/f16_parity.py /tmp/st32.parquet /tmp/news32/latest /tmp/news16/latest \
    /tmp/news16b/latest ;;
pca)
  # The one GPU stage never measured on hardware: PCA through the wgpu backend on the users × items shape (and
  # Lee), next to scikit-learn's arpack (CPU) and torch.pca_lowrank (CUDA) on the same matrices.
  step pca 240 $E bench pca --backend gpu --peer-device cuda --only users --only lee --repeats 3 ;;
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
  for p in f32 f16; do
    step "profile_encode_$p" 60 env EMBJOB_GPU_PROFILE=1 $E bench encode --model /tmp/minilm --backend gpu --python none \
      --repeats 1 --precision $p --text "lee=$LEE:text"
  done ;;
finetune)
  # Contrastive fine-tuning (issue 27) on the GPU next to sentence-transformers on CUDA f32, the same MovieLens
  # pairs in the same order; then the MovieLens job and the Lee masked-LM job on the GPU.
  # Then where a step's GPU time goes (per kernel), for the next change. Limits sum to 540 s (one call).
  step finetune 180 $E bench finetune --model /tmp/minilm --backend gpu --peer-device cuda --steps 40 --batch 64 --repeats 3
  step profile_finetune 60 env EMBJOB_GPU_PROFILE=1 $E bench finetune --model /tmp/minilm --backend gpu --python none \
    --steps 10 --batch 64 --repeats 1
  sed -e 's|../models/all-MiniLM-L6-v2|/tmp/minilm|' pipelines/finetune.toml > pipelines/finetune.tmp.toml
  step finetune_job 150 $E run pipelines/finetune.tmp.toml --backend gpu --output /tmp/ft_gpu
  sed -e 's|../models/all-MiniLM-L6-v2|/tmp/minilm|' pipelines/lee_mlm.toml > pipelines/lee_mlm.tmp.toml
  step mlm_job 150 $E run pipelines/lee_mlm.tmp.toml --backend gpu --output /tmp/mlm_gpu ;;
neighbors)
  # The cosine top-10 of 200,000 items on the host's cores and on the GPU's TopK kernel (equal lists counted).
  step neighbors 240 $E bench neighbors --items 200000 --repeats 1 ;;
esac; done
echo "== summary"; for f in "$OUT"/*.log; do echo "-- $f"; grep -E '^\||^(PASS|FAIL)|precision:' "$f"; done
