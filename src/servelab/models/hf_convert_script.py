"""Run by the Python of a vLLM venv (not by servelab's): convert a GGUF file to an HF directory.

Usage: ``VLLM_PYTHON hf_convert_script.py GGUF_FILE OUT_DIR``. Loads the tokenizer and the
model with transformers (``gguf_file=``, dequantised to bfloat16), drops the GGUF quantisation
marker that makes ``save_pretrained`` refuse the model, saves both into ``OUT_DIR`` (which it
creates), and prints one line ``servelab-convert: {json}`` with transformers' version, the dtype
and the seconds taken. Imports nothing from servelab (the venv does not have it); servelab
runs it offline (``HF_HUB_OFFLINE=1``).
"""

import importlib
import json
import sys
import time
from pathlib import Path

DTYPE = "bfloat16"


def main() -> None:
    gguf_file, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    started = time.monotonic()
    folder, name = str(gguf_file.parent), gguf_file.name
    print(f"loading the tokenizer from {gguf_file}", flush=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    print("loading and dequantising the model", flush=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=getattr(torch, DTYPE)
    )
    # The weights are dequantised; without this save_pretrained refuses a "quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    print(f"saving to {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    result = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype": str(model.dtype).removeprefix("torch."),
        "seconds": round(time.monotonic() - started, 1),
    }
    print("servelab-convert: " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
