"""Reference ids for tests/tokenizer_sentencepiece_test.ts, from the sentencepiece library.

Run with Debian's python (python3-sentencepiece 0.1.97):
    /usr/bin/python3 tests/reference/tokenizer_reference.py
Writes (all small, committed):
    tests/fixtures/tokenizer_sp_small.model     BPE, byte fallback, user-defined symbols,
                                                custom normalization rules (charsmap),
                                                remove_extra_whitespaces
    tests/fixtures/tokenizer_sp_noprefix.model  BPE, no byte fallback, no dummy prefix, pad id 3
    tests/fixtures/tokenizer_sp_unigram.model   a unigram model (tune reads it; ids in tokenizer_sentencepiece_test.ts)
    tests/fixtures/tokenizer_sp_cases.json      text -> ids -> text for those models and for
                                                Llama 2's tokenizer.model in tests/data
"""
import json
import os
import random
import tempfile

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
LLAMA2 = os.path.join(HERE, "..", "data", "tokenizers", "llama2", "tokenizer.model")


def random_texts(rng, n, length):
    ranges = [(0x20, 0x7E)] * 6 + [(0xA0, 0x17F), (0x391, 0x3C9), (0x410, 0x44F), (0x4E00, 0x4E80),
                                   (0x3040, 0x309F), (0x1F600, 0x1F64F), (0x10330, 0x1034A), (0x9, 0xD)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, length)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


def train(tmp):
    rng = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog tokenizer merges bytes fallback café naïve "
             "Zürich 東京 Привет hello world data model training").split()
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)))
    rules = os.path.join(tmp, "rules.tsv")
    with open(rules, "w") as f:
        # A -> a, fullwidth A -> A, circled digit one -> 1, ligature fi -> f i
        f.write("41\t61\nFF21\t41\n2460\t31\nFB01\t66 69\n")
    common = dict(input=corpus, character_coverage=1.0, minloglevel=2, num_threads=1)
    spm.SentencePieceTrainer.train(
        model_prefix=os.path.join(tmp, "small"), model_type="bpe", vocab_size=320,
        byte_fallback=True, user_defined_symbols=["<tool>", "<to"], normalization_rule_tsv=rules,
        remove_extra_whitespaces=True, **common)
    spm.SentencePieceTrainer.train(
        model_prefix=os.path.join(tmp, "noprefix"), model_type="bpe", vocab_size=250,
        byte_fallback=False, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", pad_id=3, **common)
    spm.SentencePieceTrainer.train(
        model_prefix=os.path.join(tmp, "unigram"), model_type="unigram", vocab_size=60,
        normalization_rule_name="identity", **common)
    models = {}
    for name in ["small", "noprefix", "unigram"]:
        with open(os.path.join(tmp, name + ".model"), "rb") as f:
            models[name] = f.read()
    return models


def cases(sp, texts):
    return [{"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in texts]


def main():
    rng = random.Random(1234)
    with tempfile.TemporaryDirectory() as tmp:
        models = train(tmp)
    for name, data in models.items():
        with open(os.path.join(FIXTURES, f"tokenizer_sp_{name}.model"), "wb") as f:
            f.write(data)

    llama2 = spm.SentencePieceProcessor(model_file=LLAMA2)
    texts = [
        "\t\ttabs\tand\r\nCRLF\r\n", "a\u2581b \u2581\u2581x", "\ufb01 ligature, \uff21 fullwidth, e\u0301 combining",
        "\u0000\u0001\u007f control", "\U0001D518\U0001D52B math \U00010348 gothic \U0001F916\U0001F469\u200d\U0001F469\u200d\U0001F467 zwj",
        "   ", "x   ", " leading", "trailing \n", "ha" * 200, "a" * 300, "<unk> <s></s><0x41> [INST] <<SYS>>",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac, \u0627\u0644\u0639\u0631\u0628\u064a\u0629, \u0939\u093f\u0928\u094d\u0926\u0940, \ud55c\uad6d\uc5b4, \u0e44\u0e17\u0e22",
        " ".join(["Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."] * 25),
    ] + random_texts(rng, 24, 40)
    decode_ids = [[233, 160], [0], [0, 0, 15043], [13, 15043], [1, 1, 29871, 15043], [35, 15043],
                  [131, 15043], [15043, 258, 68], [2, 15043, 2], [29871], [259, 259]]
    decode_ids += [[rng.randrange(32000) for _ in range(rng.randint(1, 20))] for _ in range(20)]
    out = {
        "llama2": cases(llama2, texts),
        "llama2_decode": [{"ids": ids, "decoded": llama2.decode(ids)} for ids in decode_ids],
    }
    small_texts = ["AB \uff21\uff22 \u2460\u2461 \ufb01sh", "<tool>x <to <tool <tools>", "  double  spaces  ",
                   "unknown \u2713 chars \U0001F642", "hello world", ""] + random_texts(rng, 10, 30)
    for name in ["small", "noprefix"]:
        sp = spm.SentencePieceProcessor(model_file=os.path.join(FIXTURES, f"tokenizer_sp_{name}.model"))
        out[f"sp_{name}"] = {
            "bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id(), "unk": sp.unk_id(),
            "vocab": sp.vocab_size(), "cases": cases(sp, small_texts)}
    with open(os.path.join(FIXTURES, "tokenizer_sp_cases.json"), "w") as f:
        json.dump(out, f, ensure_ascii=True, indent=0)


if __name__ == "__main__":
    main()
