"""Write a small random-weight llama GGUF with a real tokenizer, for timing engines and clients.

The tokenizer (and its vocabulary size) come from a llama.cpp vocab file such as
``models/ggml-vocab-llama-bpe.gguf`` of the llama.cpp source; the weights are random f16 of the
requested shape. Such a model decodes nonsense at the speed of a model of its shape, which is
all a client-accuracy measurement needs (docs/client-accuracy.md: about 1,350 tok/s single
stream on an H200 with 4 layers 512 wide).
Run: python benchmarks/synthetic_gguf.py VOCAB.gguf OUT.gguf [--layers 4] [--width 512]
"""

from __future__ import annotations

import argparse

import gguf
import numpy as np

TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _value(field: gguf.ReaderField) -> object:
    """A reader field's value: a scalar, a string, or a list of either."""
    kinds = field.types
    if kinds[0] == gguf.GGUFValueType.ARRAY:
        if kinds[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
        return [int(field.parts[i][0]) for i in field.data]
    if kinds[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode()
    return int(field.parts[field.data[0]][0])


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab: gguf.GGUFReader) -> int:
    tokens = 0
    for key in TOKENIZER_KEYS:
        field = vocab.fields[key]
        value = _value(field)
        if isinstance(value, list):
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                writer.add_array(key, value)
            else:
                writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=sub)
            tokens = max(tokens, len(value)) if key.endswith("tokens") else tokens
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)
    writer.add_string("tokenizer.chat_template", CHATML)
    return tokens


def _tensors(writer: gguf.GGUFWriter, layers: int, width: int, ffn: int, vocab: int) -> None:
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", rand(vocab, width))
    writer.add_tensor("output_norm.weight", np.ones(width, dtype=np.float32))
    writer.add_tensor("output.weight", rand(vocab, width))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(width, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(p + name + ".weight", rand(width, width))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(width, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", rand(ffn, width))
        writer.add_tensor(p + "ffn_up.weight", rand(ffn, width))
        writer.add_tensor(p + "ffn_down.weight", rand(width, ffn))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    args = ap.parse_args()
    vocab = gguf.GGUFReader(args.vocab)
    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name("synthetic-llama")
    n_vocab = _copy_tokenizer(writer, vocab)
    ffn = args.width * 3
    writer.add_block_count(args.layers)
    writer.add_context_length(4096)
    writer.add_embedding_length(args.width)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.heads)
    writer.add_rope_dimension_count(args.width // args.heads)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _tensors(writer, args.layers, args.width, ffn, n_vocab)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.out}: {args.layers} layers, {args.width} wide, vocab {n_vocab}")


if __name__ == "__main__":
    main()
