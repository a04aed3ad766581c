"""Unigram SentencePiece fixtures for tests/tokenizer_unigram_test.ts, made with the
sentencepiece library (Debian's python3-sentencepiece 0.1.97; run with /usr/bin/python3):

- trains two tiny unigram models on the text below (written here, a few KB):
  `byte_fallback.model` (nmt_nfkc normalizer, byte fallback, add_dummy_prefix, extra
  whitespace removed: the T5/Llama-style settings) and `plain.model` (identity normalizer,
  no byte fallback, no dummy prefix, whitespace kept);
- writes the ids sentencepiece gives for CASES with each model to cases.json;
- re-encodes Llama 2's cases (tests/data/tokenizers/llama2/cases.jsonl) with Llama 2's
  tokenizer.model and checks them, adding ids for CASES too (llama2_cases in cases.json).

Run from the repo root: /usr/bin/python3 tests/reference/tokenizer_unigram_reference.py
(then `deno fmt tests/data/tokenizers/unigram`).
"""
import io
import json
import os

import sentencepiece as spm

OUT = "tests/data/tokenizers/unigram"

TEXT = """Once upon a time there was a little fox who lived in the forest.
The fox liked to run, to jump and to play with the other animals.
One day the fox found a shiny stone near the river. It was blue and round.
"What is this?" asked the rabbit. "It is my new treasure," said the fox.
They played together until the sun went down, and then they went home.
The forest was quiet at night; the owls sang and the stars were bright.
In the morning the fox and the rabbit ran to the river again.
Numbers: 1 2 3 10 20 100 2024 3.14 42!
Tokenizers split text into pieces; unigram models keep the likeliest segmentation.
Café, naïve, résumé, Zürich, São Paulo, Ελληνικά, русский, 日本語, 中文.
"""

CASES = [
    "",
    "the fox",
    "Once upon a time",
    "  leading and trailing spaces  ",
    "many     spaces   inside",
    "tabs\tand\nnewlines\n",
    "unseen: xylophone quartz jazz",
    "ＦＵＬＬＷＩＤＴＨ ｆｏｘ １２３",
    "ligature ﬁsh and ① circled",
    "Café naïve résumé",
    "emoji 🦊 and 日本語",
    "The forest was quiet at night.",
    "\u00a0non-breaking\u2003spaces",
    "e\u0301 combining accent",
    "UPPER lower MiXeD",
]


def train(prefix, vocab_size, **kw):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.splitlines() * 4),
        model_prefix=os.path.join(OUT, prefix),
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=0.98,
        **kw,
    )
    os.remove(os.path.join(OUT, prefix + ".vocab"))
    return spm.SentencePieceProcessor(model_file=os.path.join(OUT, prefix + ".model"))


def main():
    os.makedirs(OUT, exist_ok=True)
    models = {
        "byte_fallback": train(
            "byte_fallback", 400, byte_fallback=True, normalization_rule_name="nmt_nfkc"
        ),
        "plain": train(
            "plain",
            120,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_by_whitespace=True,
        ),
    }
    out = {}
    for name, sp in models.items():
        out[name] = [
            {"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in CASES
        ]
    llama = spm.SentencePieceProcessor(model_file="tests/data/tokenizers/llama2/tokenizer.model")
    checked = 0
    with open("tests/data/tokenizers/llama2/cases.jsonl") as f:
        for line in f:
            c = json.loads(line)
            ids = llama.encode(c["text"])
            assert ids == c["ids"] or [llama.bos_id()] + ids == c["ids"], c["text"]
            checked += 1
    out["llama2_cases"] = [{"text": t, "ids": llama.encode(t)} for t in CASES]
    out["llama2_checked"] = checked
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}/cases.json; Llama 2 cases.jsonl re-verified: {checked}")


main()
