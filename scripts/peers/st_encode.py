"""sentence-transformers peer of `embjob bench encode`, in f32 or, with --half, in f16 (`model.half()`, the usual way
to run it on a GPU's tensor cores). The protocol of the team's shared/peers/ref_encode.py: JSON lines, one "env" line
and one "result" line (median of --repeats timed passes after one warm-up, tokenizing included, documents/s,
tokens/s), and the vectors in input order in --out (Parquet: row, vector) for parity checks.

    pip install torch sentence-transformers pyarrow pandas
    python scripts/peers/st_encode.py --model models/all-MiniLM-L6-v2 --parquet pipelines/data/lee_docs.parquet \
        --device cuda --batch 512 --half
"""
import argparse, json, resource, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--column", default="text")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--half", action="store_true", help="f16 weights and activations (model.half())")
    ap.add_argument("--out", default="", help="the vectors of the last pass, as Parquet (row, vector)")
    a = ap.parse_args()
    import numpy as np, pandas as pd, torch, pyarrow as pa, pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    texts = pd.read_parquet(a.parquet, columns=[a.column])[a.column].tolist()
    m = SentenceTransformer(a.model, device=a.device)
    if a.half:
        m = m.half()
    ids = m.tokenizer(texts, truncation=True, max_length=m.max_seq_length)["input_ids"]
    tokens = sum(len(x) for x in ids)
    print(json.dumps({"event": "env", "torch": torch.__version__, "device": a.device, "half": a.half,
                      "max_seq_length": m.max_seq_length, "documents": len(texts), "tokens": tokens}), flush=True)
    cuda = a.device.startswith("cuda")
    m.encode(texts[: a.batch * 2], batch_size=a.batch)  # warm-up: kernels chosen, memory pools sized
    times = []
    for _ in range(max(a.repeats, 1)):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        v = m.encode(texts, batch_size=a.batch, convert_to_numpy=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    s = float(np.median(times))
    name = "sentence-transformers" + (" f16" if a.half else " f32")
    print(json.dumps({"event": "result", "impl": name, "batch": a.batch, "median_s": round(s, 4),
                      "documents_per_s": round(len(texts) / s, 1), "tokens_per_s": round(tokens / s, 1),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "dim": int(v.shape[1]), "times": [round(x, 4) for x in times]}), flush=True)
    if a.out:
        v = np.asarray(v, dtype=np.float32)
        col = pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1])
        pq.write_table(pa.table({"row": list(range(len(texts))), "vector": col}), a.out)


if __name__ == "__main__":
    main()
