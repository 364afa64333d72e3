#!/usr/bin/env bash
# Prepares what scripts/device/gpu_bench.sh needs on a lent GPU machine (no network there), in the git-ignored
# folders .gpu/ and .gl/. Run from the repository root after a release build (cargo build --release).
# The all-MiniLM-L6-v2 folder (88 MB in f32) is over the 64 MiB a call may carry, so it travels in f16 and is
# widened back to f32 on the device: both embjob and the peers then read the same (f16-rounded) weights.
# Needs python3 with numpy, pandas and pyarrow, strip, xz and apt-get (for the Vulkan loader packages).
set -euo pipefail
mkdir -p .gpu/minilm16 .gl /tmp/amd64/partial
strip -o .gpu/embjob target/release/embjob && xz -T2 -6 -f .gpu/embjob
m=${EMBJOB_MODEL_DIR:-models/all-MiniLM-L6-v2}
cp "$m"/*.json .gpu/minilm16/ && cp -r "$m"/1_Pooling .gpu/minilm16/
# safetensors is a little-endian header and raw tensors: rewritten in f16 with numpy alone (no torch needed here).
python3 - "$m" <<'PY'
import json, struct, sys
import numpy as np
raw = open(sys.argv[1] + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n]); body = raw[8 + n:]
meta = head.pop("__metadata__", {"format": "pt"})
kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
out, blobs, at = {"__metadata__": meta}, [], 0
for name, t in head.items():
    a, b = t["data_offsets"]
    v = np.frombuffer(body[a:b], dtype=kinds[t["dtype"]])
    if v.dtype == np.float32:
        v = v.astype(np.float16)
    blob = v.tobytes()
    out[name] = {"dtype": {np.float16: "F16", np.int64: "I64"}[v.dtype.type], "shape": t["shape"],
                 "data_offsets": [at, at + len(blob)]}
    blobs.append(blob); at += len(blob)
h = json.dumps(out, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(".gpu/minilm16/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); [f.write(b) for b in blobs]
PY
cp ../shared/peers/ref_recommender.py ../shared/peers/harness_common.py .gpu/
cp ../shared/data/movielens_movies.parquet .gpu/
# The food favourites as the list layout the PyTorch peer reads.
python3 - <<'PY'
import pandas as pd
d = pd.read_csv("pipelines/data/food_favorites.csv").sort_values(["user_id", "rank"], kind="mergesort")
d.groupby("user_id", sort=True)["item"].apply(list).reset_index().rename(columns={"item": "items"}).to_parquet(
    ".gpu/food_favorites.parquet", index=False)
PY
for b in 256 4096; do
  sed -e 's#"data/#"../pipelines/data/#' -e "s/^batch_size = .*/batch_size = $b/" pipelines/movielens.toml >.gpu/ml_$b.toml
  sed -e 's#"data/food_favorites.csv"#"food_favorites.parquet"#' -e 's#"data/#"../pipelines/data/#' -e '/^format = /d' \
    -e '/^order = /d' -e 's/^layout = .*/layout = "list"/' -e 's/^item = .*/item = "items"/' \
    -e "s/^batch_size = .*/batch_size = $b/" pipelines/food.toml >.gpu/food_$b.toml
done
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update >/dev/null && (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .gpu .gl
