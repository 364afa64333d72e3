"""sentence-transformers peer of `embjob bench finetune`: the same contrastive training (MultipleNegativesRankingLoss,
torch.optim.AdamW, transformers' linear schedule with warm-up, clipping at 1.0, dropout off) on the same batches of
(anchor, positive) texts, in the same order. JSON lines: one "env" line and one "result" line (median of --repeats
timed runs of all steps from the starting weights, tokenizing included, pairs/s, tokens/s, peak RSS; on CUDA also
the peak of allocated GPU memory).

    python scripts/peers/st_finetune.py --model models/all-MiniLM-L6-v2 --pairs pairs.parquet --device cpu
"""
import argparse, json, math, resource, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True, help="Parquet: step, anchor, positive (the batches in order)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--max-tokens", type=int, default=256)
    a = ap.parse_args()
    import numpy as np, pandas as pd, torch
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    df = pd.read_parquet(a.pairs)
    steps = [g for _, g in df.groupby("step", sort=True)]
    cuda = a.device.startswith("cuda")

    def build():
        word = models.Transformer(a.model, max_seq_length=a.max_tokens,
                                  config_args={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        return SentenceTransformer(modules=[word, pool, models.Normalize()], device=a.device)

    m0 = build()
    tokens = sum(len(x) for x in m0.tokenizer(df["anchor"].tolist() + df["positive"].tolist(), truncation=True,
                                               max_length=a.max_tokens)["input_ids"])
    print(json.dumps({"event": "env", "torch": torch.__version__, "device": a.device, "steps": len(steps),
                      "pairs": len(df), "tokens": tokens, "threads": torch.get_num_threads()}), flush=True)
    del m0

    def run():
        model = build()
        inner = model[0].auto_model
        named = [(n, p) for n, p in inner.named_parameters() if not n.startswith("pooler.")]
        for n, p in inner.named_parameters():
            p.requires_grad_(not n.startswith("pooler."))
        decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=a.lr)
        sched = get_linear_schedule_with_warmup(opt, math.ceil(0.1 * len(steps)), len(steps))
        loss_fn = MultipleNegativesRankingLoss(model, scale=20.0)
        model.train()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        losses = []
        for g in steps:
            feats = [model.tokenize(g["anchor"].tolist()), model.tokenize(g["positive"].tolist())]
            feats = [{k: (v.to(a.device) if torch.is_tensor(v) else v) for k, v in f.items()} for f in feats]
            opt.zero_grad()
            loss = loss_fn(feats, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, losses

    times, losses = [], []
    for _ in range(max(a.repeats, 1)):
        s, losses = run()
        times.append(s)
    s = float(np.median(times))
    out = {"event": "result", "impl": "sentence-transformers", "median_s": round(s, 3),
           "pairs_per_s": round(len(df) / s, 2), "tokens_per_s": round(tokens / s, 1),
           "first_loss": losses[0], "last_loss": losses[-1],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
