#!/usr/bin/env python3
"""Small tokenizers with each family's exact pipeline, and the ids Hugging Face `tokenizers`
gives on tricky texts. The real tokenizer files are on the Hub, which is not reachable: each
family's transformers tokenizer class (whose constructor sets the normalizer, pre-tokenizer,
decoder and post-processor the converters give real checkpoints) is trained anew on a small
corpus with `train_new_from_iterator`, which keeps that pipeline.

Run by hand inside .reference-venv (tools/reference/make-env.sh), never by CI:
  .reference-venv/bin/python tools/reference/make_family_tokenizers.py
Writes tests/data/tokenizers/<family>/{tokenizer.json, cases.json}.
"""
import json
import os

import tokenizers
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "data", "tokenizers")
SHARED_CASES = os.path.join(HERE, "..", "..", "..", "shared", "tokenizers", "cases.json")

# Family-specific tricky texts beside the shared ones: whitespace runs, the SentencePiece
# marker itself, digits, emoji, CJK, bytes no vocabulary entry covers (byte fallback).
EXTRA = ["\u2581already marked\u2581\u2581twice", "   ", "tab\t\tand\u3000ideographic space",
         "0123 45678 9.0", "🧪🧬 rare emoji 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "한국어 텍스트와 ひらがな", "trailing space ",
         "\n\nleading newlines", "x" * 80]

# cl100k_base's pre-tokenizer pattern, as transformers' TikTokenConverter writes it.
CL100K = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def olmo2_base():
    """OLMo 2 (transformers loads its tokenizer.json as it is: TokenizersBackend): the dolma2
    tokenizer, derived from cl100k_base — the pattern split isolated, then byte-level without
    its own regex, byte-level decoding, no BOS. Untrained; make() trains it like the others."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CL100K), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok)


# (tokenizer class, special tokens, the BOS its checkpoints' post-processor prepends or None)
FAMILIES = {
    # Gemma 2 / Gemma 3: spaces become ▁ (no prefix space), byte fallback, <bos> prepended.
    "gemma": (transformers.GemmaTokenizer, ["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>"),
    # Qwen3 (Qwen2Tokenizer): NFC, Qwen's split pattern, byte-level BPE, no BOS.
    "qwen3": (transformers.Qwen2Tokenizer, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None),
    # Phi-3 (LlamaTokenizer): Metaspace (prefix ▁ on the first piece), byte fallback, <s>.
    "phi3": (transformers.LlamaTokenizer, ["<unk>", "<s>", "</s>", "<|endoftext|>"], "<s>"),
    "olmo2": (olmo2_base, ["<|endoftext|>", "<|pad|>"], None),
}


def corpus(texts):
    words = ("the of and to in is that for it as with was on be by this are from at or an "
             "model layer head token attention residual stream feature circuit probe").split()
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) for i in range(400)]
    # The test texts themselves stay out (else they become single pieces); every other
    # text's characters are in, so both learned pieces and byte fallback are exercised.
    alphabet = sorted({ch for t in texts[::2] for ch in t})
    return lines + ["".join(alphabet)]


def complete(spec, bos):
    """What real checkpoints of the family have beyond the trained pipeline: the 256 byte
    pieces <0x00>..<0xFF> that byte fallback needs (appended to the vocabulary) and the
    post-processor prepending BOS."""
    model = spec["model"]
    if model.get("byte_fallback"):
        vocab = model["vocab"]
        for b in range(256):
            piece = f"<0x{b:02X}>"
            if piece not in vocab:
                vocab[piece] = len(vocab)
    if bos is not None:
        bos_id = next(a["id"] for a in spec["added_tokens"] if a["content"] == bos)
        spec["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}
    return spec


def make(family, cls, specials, bos, texts):
    base = cls()
    tok = base.train_new_from_iterator(corpus(texts), vocab_size=700, new_special_tokens=specials)
    spec = complete(json.loads(tok.backend_tokenizer.to_str()), bos)
    out = os.path.join(OUT, family)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(spec, f, ensure_ascii=False)
    # The ids of the saved file through the `tokenizers` library itself.
    saved = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    cases = []
    for text in texts:
        ids = saved.encode(text).ids
        cases.append({"text": text, "ids": ids,
                      "decoded": saved.decode(ids, skip_special_tokens=True)})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"note": f"ids from tokenizers {tokenizers.__version__} (transformers "
                           f"{transformers.__version__}) on {cls.__name__} trained anew",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
    print(family, len(saved.get_vocab()), "pieces;", json.loads(saved.to_str())["model"]["type"])


def main():
    with open(SHARED_CASES) as f:
        texts = [c["text"] for c in json.load(f)["cases"]["llama3style"]] + EXTRA
    for family, (cls, specials, bos) in FAMILIES.items():
        make(family, cls, specials, bos, texts)


if __name__ == "__main__":
    main()
