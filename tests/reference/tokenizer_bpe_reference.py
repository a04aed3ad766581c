"""Reference ids for tests/tokenizer_hf_test.ts from the real `tiktoken` and `tokenizers` libraries.

Needs a Python with `pip install tokenizers tiktoken` (tested: tokenizers 0.23.2, tiktoken 0.14.0):
    python -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers tiktoken
    /tmp/tokvenv/bin/python tests/reference/tokenizer_bpe_reference.py
Writes tests/fixtures/tokenizer_bpe_cases.json: small tokenizer files (a tiktoken rank file
and four tokenizer.json variants, written to a temp dir by the test) with text -> ids -> text
cases from the libraries.
"""
import base64
import json
import os
import random

import tiktoken
from tokenizers import Tokenizer

# cases omit "decoded" when it equals "text", "ids_special" when it equals "ids", and keep
# "with_bos" (post-processor applied) for the first three cases only, to keep the fixture small

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "tokenizer_bpe_cases.json")

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# byte-level BPE: merges as (left, right) byte strings, in rank order after the 256 bytes
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), (" ", "w"), ("o", "r"), (" w", "or"),
          ("l", "d"), (" wor", "ld"), ("\xc3", "\xa9"), ("c", "a"), ("ca", "f"), ("caf", "\xc3\xa9"),
          ("1", "2"), ("12", "3"), ("\n", "\n"), ("a", "a"), ("\xe6\x9d", "\xb1"), ("\xe6", "\x9d")]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def bl(s):
    """Byte-level string of a latin-1 'byte string'."""
    return "".join(B2U[b] for b in s.encode("latin-1"))


def byte_level_files():
    ranks = {bytes([b]): b for b in range(256)}
    for left, right in MERGES:
        ranks[(left + right).encode("latin-1")] = len(ranks)
    ranks[b"xyz"] = len(ranks)  # reachable only by whole-piece lookup
    rank_file = "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items())
    vocab = {bl(t.decode("latin-1")): r for t, r in ranks.items()}
    merges = [[bl(a), bl(b)] for a, b in MERGES]
    return ranks, rank_file, vocab, merges


def random_texts(rng, n):
    alphabet = list("hello world café 123 aaa xyz IT'S \n\n\t  é東京🙂👩‍👧 Привет ?!.,-_\r\n<|eot_id|>") + ["\u0301", "\u00a0", "\u3000", "\x85"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 50))) for _ in range(n)]


def main():
    rng = random.Random(99)
    ranks, rank_file, vocab, merges = byte_level_files()
    base = len(ranks)
    texts = ["hello world", "hello  world", "café 123\n\nxyz", "1234", "xyzx", "aaa", "aaaa", "it's IT'S",
             "shell", "🙂", "", "東京 東", " leading", "trailing  ", "a\u00a0b\u3000c\x85d",
             "<|start_header_id|>hello<|end_header_id|>\n\n<|eot_id|>", "x<|eot_id|>y"] + random_texts(rng, 40)
    out = {}

    enc = tiktoken.Encoding("small", pat_str=LLAMA3, mergeable_ranks=ranks,
                            special_tokens={s: base + i for i, s in enumerate(SPECIALS)})
    out["tiktoken"] = {
        "rank_file": rank_file,
        "cases": [],
    }

    for t in texts:
        row = {"text": t, "ids": enc.encode(t, allowed_special=set(), disallowed_special=())}
        special = enc.encode(t, allowed_special="all")
        if special != row["ids"]:
            row["ids_special"] = special  # absent: same as ids
        out["tiktoken"]["cases"].append(row)

    added = [{"id": base + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]
    llama3 = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [base], "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": True, "vocab": vocab, "merges": merges},
    }
    qwen = json.loads(json.dumps(llama3))
    qwen["normalizer"] = {"type": "NFC"}
    qwen["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN2
    qwen["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    qwen["model"]["ignore_merges"] = False
    qwen["added_tokens"] = [{"id": base + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}
                            for i, s in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])]
    qwen["added_tokens"].append({"id": base + 3, "content": "<think>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": False})
    qwen["added_tokens"].append({"id": base + 4, "content": "<tool>", "single_word": False, "lstrip": True,
                                 "rstrip": True, "normalized": False, "special": False})

    # SentencePiece-style BPE as Llama 2's tokenizer.json: byte fallback, ▁ for spaces
    sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        sp_vocab[f"<0x{b:02X}>"] = len(sp_vocab)
    for ch in ["▁", "h", "e", "l", "o", "w", "r", "d", "東", "a"]:
        sp_vocab[ch] = len(sp_vocab)
    sp_merges = [["▁", "h"], ["e", "l"], ["l", "o"], ["▁h", "el"], ["▁hel", "lo"], ["▁", "w"], ["o", "r"],
                 ["▁w", "or"], ["▁wor", "l"], ["▁worl", "d"], ["▁", "▁"], ["▁", "東"]]
    for a, b in sp_merges:
        sp_vocab[a + b] = len(sp_vocab)
    sp_added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    llama2_legacy = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": sp_added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": sp_vocab, "merges": [f"{a} {b}" for a, b in sp_merges]},
    }
    metaspace = json.loads(json.dumps(llama2_legacy))
    metaspace["normalizer"] = None
    metaspace["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    metaspace["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}]}
    no_fallback = json.loads(json.dumps(llama2_legacy))
    no_fallback["model"]["byte_fallback"] = False

    sp_texts = ["hello world", "hello  world", "  hello", "hi🙂", "東京 東", "", " ", "<s>hello</s> world",
                "hello<s>", "zzz hello qqq"] + random_texts(rng, 25)
    for name, spec, cases in [("hf_llama3", llama3, texts), ("hf_qwen2", qwen, texts + ["x<think>y", "a <tool>  b", " <tool>", "<tool>\n\nx", "hello\t<tool><tool> <think> z"]),
                              ("hf_llama2_legacy", llama2_legacy, sp_texts), ("hf_llama2_metaspace", metaspace, sp_texts),
                              ("hf_no_byte_fallback", no_fallback, sp_texts)]:
        tok = Tokenizer.from_str(json.dumps(spec))
        rows = []
        for t in cases:
            ids = tok.encode(t, add_special_tokens=False).ids
            row = {"text": t, "ids": ids}
            decoded = tok.decode(ids, skip_special_tokens=True)
            if decoded != t:
                row["decoded"] = decoded  # absent: equals text
            if len(rows) < 3:
                row["with_bos"] = tok.encode(t).ids
            rows.append(row)
        out[name] = {"tokenizer": spec, "cases": rows}
    with open(OUT, "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
