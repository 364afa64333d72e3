#!/usr/bin/env python3
"""CI: a sharded text job on a local Ray cluster (examples/ray_shards.py) equals the single run, bit for bit.

The Lee corpus (pipelines/data/lee_docs.parquet) is split into six Parquet files of uneven sizes; the news job's
settings (BoW tf-idf, PCA, contextual vectors from the model folder) run once on one node and once as 4 Ray tasks
with a fault drill (the first attempt of shard 1 is killed part-way and retried), then merged. Every table must be
equal: vocabulary, BoW, PCA, metrics (but times), and the text vectors (one file against the partitioned table).

    python scripts/ray_check.py --embjob target/debug/embjob --model models/all-MiniLM-L6-v2 --work /tmp/ray-check
"""

import argparse
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SIZES = [70, 20, 95, 5, 60, 50]  # documents per file: 300 in all


def write_job(work, model):
    lee = pq.read_table(os.path.join(REPO, "pipelines/data/lee_docs.parquet"))
    start = 0
    for i, n in enumerate(SIZES):
        folder = os.path.join(work, "docs", f"batch={i}")
        os.makedirs(folder, exist_ok=True)
        pq.write_table(lee.slice(start, n), os.path.join(folder, "part-0.parquet"))
        start += n
    assert start == lee.num_rows, (start, lee.num_rows)
    config = os.path.join(work, "job.toml")
    with open(config, "w") as f:
        f.write(f"""[job]
name = "lee_sharded"
seed = 7
backend = "cpu"

[input]
path = "docs"
layout = "text"
text = "text"
id = "doc_id"

[bow]
weighting = "tfidf"
min_df = 2
stop_words = ["the", "a", "an", "of", "to", "in", "and", "is", "on", "for", "that", "was", "with", "said"]

[pca]
n_components = 16

[contextual]
model = {json.dumps(os.path.abspath(model))}
truncate = true

[output]
plots = false
handoff = false
""")
    return config


def results(run):
    """The metrics that are results (not times, rates, memory, how the encoder batched its work, or what the encoder
    cache and the duplicate texts spared it: shards find duplicates within themselves, and each run has its cache)."""
    m = pq.read_table(os.path.join(run, "metrics.parquet")).to_pylist()
    skip = {"seconds", "documents_per_second", "tokens_per_second", "peak_rss_mb", "batches", "row_groups",
            "encoded", "encoded_tokens", "from_cache", "duplicate_texts", "cache_entries", "cache_bytes"}
    return [(r["stage"], r["metric"], r["index"], r["value"]) for r in m if r["stage"] != "efficiency" and r["metric"] not in skip]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--embjob", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--shards", type=int, default=4)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    embjob = os.path.abspath(args.embjob)
    config = write_job(args.work, args.model)
    single, sharded = os.path.join(args.work, "single"), os.path.join(args.work, "ray")

    t = time.time()
    subprocess.run([embjob, "run", config, "--quiet", "--output", single], check=True)
    print(f"single run: {time.time() - t:.1f} s")
    t = time.time()
    driver = os.path.join(REPO, "examples", "ray_shards.py")
    subprocess.run(
        [sys.executable, driver, config, "--shards", str(args.shards), "--embjob", embjob, "--output", sharded,
         "--kill-first-attempt", "1"],
        check=True,
    )
    print(f"Ray: {args.shards} shard tasks (one killed and retried) and the merge: {time.time() - t:.1f} s")

    a, b = os.path.join(single, "latest"), os.path.join(sharded, "latest")
    for name in ["vocabulary", "bow", "pca_components", "pca_features", "pca_projections"]:
        x, y = pq.read_table(os.path.join(a, name + ".parquet")), pq.read_table(os.path.join(b, name + ".parquet"))
        assert x.equals(y), f"{name}.parquet differs"
    assert results(a) == results(b), "metrics differ"
    whole = pq.read_table(os.path.join(a, "text_embeddings.parquet"))
    parts = pq.read_table(os.path.join(b, "text_embeddings"))  # the partitioned table, read as one
    assert whole.equals(parts.select(whole.column_names)), "text vectors differ"
    run = json.load(open(os.path.join(b, "run.json")))
    shards = run["details"]["shards"]
    print(f"equal to the single run: vocabulary, BoW, PCA, metrics, {whole.num_rows} text vectors "
          f"({len(os.listdir(os.path.join(b, 'text_embeddings')))} parts)")
    for s in shards["shards"]:
        print(f"  shard {s['shard']}: {s['files']} files, {s['rows']} rows, {s['bytes_written']} bytes written, {s['seconds']:.1f} s")


if __name__ == "__main__":
    main()
