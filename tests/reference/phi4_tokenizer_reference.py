"""Phi-4 tokenizer fixtures for tests/tokenizer_phi4_test.ts.

Run with plain python3 (no torch needed): python3 tests/reference/phi4_tokenizer_reference.py
then `deno fmt tests/data/tokenizers/phi4_tiny` (the JSON layout only; the tokens stay).

Writes:
  tests/data/tokenizers/phi4_tiny/{vocab.json,merges.txt}  a small GPT-2-style byte-level
      BPE: the 256 byte symbols (ids 0-255 in GPT-2's byte-to-unicode order) and 120 merges
      learned greedily (most frequent pair, ties by the pair's text) on TRAIN below, as a
      Hugging Face vocab.json / merges.txt pair with its "#version" header.
  tests/data/tokenizers/phi4_tiny/special_tokens.json  a tokenizer.json-shaped file whose
      added_tokens put Phi-4's chat tokens at small ids (376-...), for torchtune's
      special_tokens_path and for tiny models.
  tests/fixtures/data/phi4_tokenizer_reference.json  ids and masks of torchtune's
      Phi4Tokenizer (torchtune/models/phi4/_tokenizer.py over
      torchtune/modules/transforms/tokenizers/_gpt2.py), restated below step by step from
      that source:
        * GPT2BaseTokenizer.encode: Python `re.findall` with the pattern
          r"'s|'t|'re|'ve|'m|'ll|'d| ?[\\w]+| ?\\d+| ?[^\\s\\w\\d]+|\\s+(?!\\S)|\\s+" (re.UNICODE), each
          piece mapped byte by byte through bytes_to_unicode, then GPT-2's bpe(): repeatedly
          merge the lowest-ranked adjacent pair (every occurrence, left to right) until no
          pair has a rank; ids from vocab.json; add_bos prepends bos_id (<|endoftext|>),
          add_eos appends eos_id (<|im_end|>). Special-token text in the input is NOT split
          out (the regex sees it as plain text).
        * merges.txt: read().split("\\n")[1:-1] (header and trailing newline dropped).
        * tokenize_messages: no BOS; per message [<|im_start|>] + encode(role) +
          [<|im_sep|>], then encode(text.rstrip(" ")) for each text item, then <|im_end|>
          unless the message is an assistant message and add_end_tokens is False; every id
          of the message gets message.masked; stop once len >= max_seq_len; then if
          len >= max_seq_len truncate right to max_seq_len, forcing the last id to eos_id
          (and the last mask to True) when add_end_tokens.
        * decode drops ids 100256-100351 when skip_special_tokens.
"""
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "tokenizers", "phi4_tiny")
FIX = os.path.join(HERE, "..", "fixtures", "data")

PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[\w]+| ?\d+| ?[^\s\w\d]+|\s+(?!\S)|\s+""", re.UNICODE)

TRAIN = (
    "You are a helpful assistant. What is the capital of France? The capital of France is "
    "Paris. Tell me a story about a robot who learns to paint. The robot's name was Pixel, "
    "and it painted the sea, the sky and the sunrise. Count: 1, 22, 333, 4444. "
    "It's fine, we'll see; they're here and I'm done.\n\nsystem user assistant\n"
)
N_MERGES = 120


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


B2U = bytes_to_unicode()


def byte_level(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))


def learn():
    vocab = {}
    for b in range(256):
        vocab[B2U[b]] = len(vocab)
    words = [list(byte_level(p)) for p in PAT.findall(TRAIN)]
    merges = []
    while len(merges) < N_MERGES:
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: (kv[1], [-ord(c) for c in kv[0][0] + "\0" + kv[0][1]]))[0]
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        new_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words.append(out)
        words = new_words
    return vocab, merges


def phi4_special_tokens():
    st = {
        "<|dummy_0|>": 100256, "<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|dummy_1|>": 100261,
        "<|dummy_2|>": 100262, "<|dummy_3|>": 100263, "<|im_start|>": 100264,
        "<|im_end|>": 100265, "<|im_sep|>": 100266, "<|endofprompt|>": 100276,
    }
    k = 4
    for i in range(100267, 100352):
        if i == 100276:
            continue
        st[f"<|dummy_{k}|>"] = i
        k += 1
    return st


class Gpt2Bpe:
    """GPT2BaseTokenizer's encode path, as described in the module doc."""

    def __init__(self, vocab_path, merges_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]
        self.ranks = {tuple(l.split()): r for r, l in enumerate(lines)}

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        return list(word)

    def encode(self, text):
        ids = []
        for piece in PAT.findall(text):
            ids += [self.encoder[s] for s in self.bpe(byte_level(piece))]
        return ids


class Phi4:
    def __init__(self, bpe, special):
        self.bpe, self.st = bpe, special
        self.eos, self.bos = special["<|im_end|>"], special["<|endoftext|>"]

    def encode(self, text, add_bos=True, add_eos=True):
        ids = self.bpe.encode(text)
        return ([self.bos] if add_bos else []) + ids + ([self.eos] if add_eos else [])

    def tokenize_messages(self, messages, add_end_tokens, max_seq_len):
        toks, mask = [], []
        for m in messages:
            header = [self.st["<|im_start|>"]] + self.encode(m["role"], False, False) + [
                self.st["<|im_sep|>"]]
            toks += header
            mask += [m["masked"]] * len(header)
            body = self.encode(m["content"].rstrip(" "), False, False)
            if m["role"] != "assistant" or add_end_tokens:
                body.append(self.st["<|im_end|>"])
            toks += body
            mask += [m["masked"]] * len(body)
            if max_seq_len and len(toks) >= max_seq_len:
                break
        if max_seq_len and len(toks) >= max_seq_len:
            toks, mask = toks[:max_seq_len], mask[:max_seq_len]
            if add_end_tokens:
                toks[-1], mask[-1] = self.eos, True
        return toks, mask


CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant.  ", "masked": True},
    {"role": "user", "content": "What is the capital of France?", "masked": True},
    {"role": "assistant", "content": "The capital of France is Paris. ", "masked": False},
    {"role": "user", "content": "Tell me a story: 12345, it's <|im_end|> café 東京\n\n ok",
     "masked": True},
    {"role": "assistant", "content": "Pixel painted the sea_side 42times!!", "masked": False},
]

TEXTS = [
    "Hello world! It's 2024... we'll   see\n\nthe  end ",
    "naïve café 東京 x_y __init__ ٣٤ 5th",
    "tabs\tand\r\nlines <|endoftext|>",
]


def main():
    os.makedirs(DATA, exist_ok=True)
    os.makedirs(FIX, exist_ok=True)
    vocab, merges = learn()
    with open(os.path.join(DATA, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(DATA, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    base = len(vocab)
    small = {}
    for name in phi4_special_tokens():
        small[name] = base + len(small)
    with open(os.path.join(DATA, "special_tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"added_tokens": [{"id": i, "content": c, "special": True} for c, i in small.items()]},
                  f, ensure_ascii=False, indent=2)

    bpe = Gpt2Bpe(os.path.join(DATA, "vocab.json"), os.path.join(DATA, "merges.txt"))
    out = {"texts": [], "cases": []}
    canon = Phi4(bpe, phi4_special_tokens())
    for t in TEXTS:
        out["texts"].append({"text": t, "ids": canon.encode(t, True, True)})
    for name, special in (("canonical", phi4_special_tokens()), ("special_tokens_path", small)):
        tok = Phi4(bpe, special)
        for add_end in (True, False):
            for max_len in (None, 20):
                ids, mask = tok.tokenize_messages(CONVERSATION, add_end, max_len)
                out["cases"].append({
                    "special": name, "add_end_tokens": add_end, "max_seq_len": max_len,
                    "tokens": ids, "mask": mask,
                })
    out["messages"] = CONVERSATION
    with open(os.path.join(FIX, "phi4_tokenizer_reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print(f"vocab {len(vocab)}, merges {len(merges)}, special ids from {base}")


if __name__ == "__main__":
    main()
