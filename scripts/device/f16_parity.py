"""The contextual f16 contract (issue 26), checked on a device: embjob's document vectors in f16 and in f32 against
sentence-transformers in f32 on the same documents, and the f16 run against a second f16 run (bit-identical).

    python3 scripts/device/f16_parity.py ST32.parquet F32_RUN F16_RUN [F16_RUN_AGAIN]

ST32.parquet is scripts/peers/st_encode.py --out (row, vector in input order); each *_RUN is an embjob run folder
(text_embeddings.parquet, run.json). Prints a table and exits 1 when a contract does not hold:
- f32: cosine with sentence-transformers >= 0.9999 on every document;
- f16: cosine >= 0.999 on every document and >= 0.9999 on average; the top-10 neighbour lists (cosine, the document
  itself left out) equal to the f32 run's at >= 95 % of positions;
- two f16 runs on one adapter: bit-identical vectors.
"""
import json, sys

import numpy as np
import pyarrow.parquet as pq


def vectors(path, order_by):
    t = pq.read_table(path, columns=[order_by, "vector"]).to_pandas().sort_values(order_by)
    return np.stack(t["vector"].to_numpy()).astype(np.float64)


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def precision(run):
    found = []

    def walk(x):
        if isinstance(x, dict):
            if "precision_reason" in x:
                found.append((x.get("precision"), x.get("precision_reason")))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.load(open(run + "/run.json")))
    return found[0] if found else ("?", "no precision_reason in run.json")


def neighbours(v, k=10):
    s = unit(v) @ unit(v).T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def main():
    st, f32_run, f16_run = sys.argv[1:4]
    again = sys.argv[4] if len(sys.argv) > 4 else None
    ref = vectors(st, "row")
    runs = {"f32": vectors(f32_run + "/text_embeddings.parquet", "row_id"),
            "f16": vectors(f16_run + "/text_embeddings.parquet", "row_id")}
    ok = True
    print("| run | precision (run.json) | documents | min cosine with ST f32 | mean | contract | holds |")
    print("|---|---|---|---|---|---|---|")
    for name, run in (("f32", f32_run), ("f16", f16_run)):
        v = runs[name]
        if v.shape != ref.shape:
            print(f"{name}: shape {v.shape} against sentence-transformers' {ref.shape}")
            sys.exit(1)
        cos = (unit(v) * unit(ref)).sum(axis=1)
        lo, mean = float(cos.min()), float(cos.mean())
        holds = lo >= 0.9999 if name == "f32" else (lo >= 0.999 and mean >= 0.9999)
        ok &= holds
        p, why = precision(run)
        rule = ">= 0.9999 each" if name == "f32" else ">= 0.999 each, >= 0.9999 mean"
        print(f"| {name} | {p} ({why}) | {len(v)} | {lo:.7f} | {mean:.7f} | {rule} | {holds} |")
    a, b = neighbours(runs["f16"]), neighbours(runs["f32"])
    equal = float((a == b).mean())
    ok &= equal >= 0.95
    print(f"\ntop-10 neighbour lists, f16 against f32: {equal:.4f} of positions equal (contract >= 0.95)")
    if again:
        w = vectors(again + "/text_embeddings.parquet", "row_id")
        same = np.array_equal(w, runs["f16"])
        ok &= same
        print(f"two f16 runs bit-identical: {same}")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
