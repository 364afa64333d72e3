"""Loads a run's fine-tuned model folder with sentence-transformers and with transformers, as a user would, encodes
the run's documents with each, and compares the vectors with embjob's text_embeddings.parquet (cosine >= 0.9999 for
every document, both loaders). A folder written by objective = "mlm" also loads as transformers'
AutoModelForMaskedLM with no weight missing or left over (but the starting model's pooler, kept for AutoModel), its decoder tied to the word embeddings. Used by .ci/run.

    python3 scripts/check_finetuned.py RUN_FOLDER INPUT_FILE TEXT_COLUMN
"""
import sys

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import torch
from sentence_transformers import SentenceTransformer
from safetensors import safe_open
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

run, input_file, text_col = sys.argv[1:4]
folder = f"{run}/finetuned_model"
table = pcsv.read_csv(input_file) if input_file.endswith(".csv") else pq.read_table(input_file)
texts = [t for t in table.column(text_col).to_pylist()]
emb = pq.read_table(f"{run}/text_embeddings.parquet")
ours = np.array(emb.column("vector").to_pylist(), dtype=np.float64)
assert ours.shape[0] == len(texts), (ours.shape, len(texts))


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


st = SentenceTransformer(folder, device="cpu")
v_st = st.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float64)
c = cosines(v_st, ours)
print(f"sentence-transformers loads {folder}: min cosine to embjob's vectors {c.min():.6f} over {len(texts)} documents")
assert c.min() >= 0.9999, c.min()

tok = AutoTokenizer.from_pretrained(folder)
model = AutoModel.from_pretrained(folder).eval()
vs = []
with torch.no_grad():
    for i in range(0, len(texts), 64):
        b = tok(texts[i:i + 64], padding=True, truncation=True, max_length=st.max_seq_length, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        vs.append(((h * m).sum(1) / m.sum(1)).numpy())
c = cosines(np.concatenate(vs).astype(np.float64), ours)
print(f"transformers AutoModel loads it: min cosine of mean-pooled vectors {c.min():.6f}")
assert c.min() >= 0.9999, c.min()

with safe_open(f"{folder}/model.safetensors", "pt") as f:
    has_head = "cls.predictions.bias" in f.keys()
if has_head:
    mlm, info = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
    # The starting model's pooler stays in the file for AutoModel (BertModel has one); BertForMaskedLM has none.
    info["unexpected_keys"] = [k for k in info["unexpected_keys"] if not k.startswith("bert.pooler.")]
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    assert not bad, bad
    assert mlm.cls.predictions.decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()
    print("transformers AutoModelForMaskedLM loads its masked-LM head: no weight missing or left over, decoder tied")
