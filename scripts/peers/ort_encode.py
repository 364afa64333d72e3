"""ONNX Runtime peer of `embjob bench encode`: the same sentence-transformers model folder exported to ONNX here, run
by onnxruntime the way sentence-transformers runs it (texts sorted by length, batches of --batch, the tokenizer's
padding and truncation at max_seq_length, mean pooling over real tokens, l2 normalisation when the folder has a
Normalize module).

Prints JSON lines like shared/peers/ref_encode.py: one "env" line and one "result" line (median of --repeats runs,
documents/s, tokens/s, peak RSS), and the lowest cosine of its vectors with sentence-transformers' when
--check-against names that script's --out file.

    pip install onnxruntime onnx transformers torch pyarrow pandas
    python scripts/peers/ort_encode.py --model models/all-MiniLM-L6-v2 --parquet pipelines/data/lee_docs.parquet
"""
import argparse, json, os, resource, sys, tempfile, time


def export(folder, path):
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(folder).eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "seq"}
    with torch.no_grad():
        try:  # the TorchScript exporter: dynamic batch and sequence axes, no extra packages
            torch.onnx.export(model, args, path, input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        except TypeError:
            torch.onnx.export(model, args, path, input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=17)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--column", default="text")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default, every core)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--onnx", default="", help="where the exported model goes (default: a temporary folder)")
    ap.add_argument("--no-fuse", action="store_true",
                    help="skip onnxruntime's transformer optimizer (fused attention, LayerNorm and GELU)")
    ap.add_argument("--check-against", default="", help="sentence-transformers vectors (ref_encode.py --out)")
    a = ap.parse_args()
    import numpy as np, pandas as pd, onnxruntime as ort
    from transformers import AutoTokenizer

    texts = pd.read_parquet(a.parquet, columns=[a.column])[a.column].astype(str).tolist()
    max_len = 512
    cfg = os.path.join(a.model, "sentence_bert_config.json")
    if os.path.exists(cfg):
        max_len = json.load(open(cfg)).get("max_seq_length", max_len)
    normalize = False
    modules = os.path.join(a.model, "modules.json")
    if os.path.exists(modules):
        normalize = any(m.get("type", "").endswith("Normalize") for m in json.load(open(modules)))
    tok = AutoTokenizer.from_pretrained(a.model)
    onnx_path = a.onnx or os.path.join(tempfile.mkdtemp(prefix="embjob-ort-"), "model.onnx")
    if not os.path.exists(onnx_path):
        export(a.model, onnx_path)
    fused = False
    if not a.no_fuse:
        # What ONNX Runtime recommends for BERT models: its transformer optimizer fuses self-attention, LayerNorm,
        # GELU and bias additions into its own kernels.
        try:
            from onnxruntime.transformers.optimizer import optimize_model
            from transformers import AutoConfig
            c = AutoConfig.from_pretrained(a.model)
            fused_path = onnx_path[:-5] + "_fused.onnx"
            optimize_model(onnx_path, model_type="bert", num_heads=c.num_attention_heads,
                           hidden_size=c.hidden_size).save_model_to_file(fused_path)
            onnx_path, fused = fused_path, True
        except Exception as e:  # the unfused graph still runs; say so
            print(json.dumps({"event": "warning", "fuse_failed": repr(e)}), file=sys.stderr, flush=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if a.threads:
        so.intra_op_num_threads = a.threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if a.device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(onnx_path, so, providers=providers)
    wanted = {i.name for i in sess.get_inputs()}

    def encode(batch_texts):
        enc = tok(batch_texts, padding=True, truncation=True, max_length=max_len, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in wanted}
        hidden = sess.run(["last_hidden_state"], feed)[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        v = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        if normalize:
            v = v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
        return v

    def encode_all():
        # sentence-transformers' order: longest first, by characters
        order = np.argsort([-len(t) for t in texts], kind="stable")
        parts = []
        for s in range(0, len(texts), a.batch):
            idx = order[s:s + a.batch]
            parts.append((idx, encode([texts[i] for i in idx])))
        out = np.zeros((len(texts), parts[0][1].shape[1]), dtype=np.float32)
        for idx, v in parts:
            out[idx] = v
        return out

    ntok = sum(len(x) for x in tok(texts, truncation=True, max_length=max_len)["input_ids"])
    print(json.dumps({"event": "env", "onnxruntime": ort.__version__, "providers": sess.get_providers(),
                      "threads": a.threads or os.cpu_count(), "fused": fused, "documents": len(texts), "tokens": ntok,
                      "max_seq_length": max_len}), flush=True)
    encode_all()  # warm-up
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter(); v = encode_all(); times.append(time.perf_counter() - t)
    s = float(np.median(times))
    result = {"event": "result", "impl": "onnxruntime" + (" (fused)" if fused else ""), "batch": a.batch, "median_s": round(s, 4),
              "documents_per_s": round(len(texts) / s, 1), "tokens_per_s": round(ntok / s, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "dim": int(v.shape[1]), "times": [round(x, 4) for x in times]}
    if a.check_against:
        import pyarrow.parquet as pq
        ref = np.stack(pq.read_table(a.check_against).column("vector").to_numpy(zero_copy_only=False))
        cos = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
        result["min_cosine_vs_sentence_transformers"] = float(cos.min())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
