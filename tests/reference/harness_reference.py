"""Python reference for tune's lm-evaluation-harness tasks (recipes/eleuther_eval.ts).

Run with Debian's torch and sentencepiece: /usr/bin/python3 tests/reference/harness_reference.py
Writes tests/fixtures/harness_reference.safetensors (read by tests/eleuther_eval_test.ts).

For the made-up documents in tests/fixtures/tiny/{arc_easy,hellaswag}.jsonl, in Python:
- the harness's document processing (arc: "Question: {question}\\nAnswer:", choices.text,
  answerKey; hellaswag: process_docs with its `preprocess` and str.capitalize);
- its `_encode_pair` with torchtune's tokenizer wrapper (SentencePiece encode, no BOS/EOS);
- each request's log-likelihood under model_reference.py's Llama (vocab 320, seeded random
  weights written to the fixture), one unpadded row at a time, and acc / acc_norm.
"""
import json
import os
import re
import sys

import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402
from model_reference import Ctx, OUT, config_a, meta_of, model_forward, random_weights  # noqa: E402

HERE = os.path.dirname(__file__)
TINY = os.path.join(HERE, "..", "fixtures", "tiny")


def preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def arc_doc(d):
    return {"context": "Question: " + d["question"] + "\nAnswer:", "choices": d["choices"]["text"],
            "gold": d["choices"]["label"].index(d["answerKey"])}


def hellaswag_doc(d):
    ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
    return {"context": preprocess(d["activity_label"] + ": " + ctx),
            "choices": [preprocess(e) for e in d["endings"]], "gold": int(d["label"])}


def encode_pair(sp, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = sp.encode(context + continuation)
    ctx = sp.encode(context)
    return ctx, whole[len(ctx):]


def main():
    sp = spm.SentencePieceProcessor(model_file=os.path.join(HERE, "..", "fixtures", "tokenizer_sp_small.model"))
    cfg = dict(config_a())
    cfg["vocab"] = 320
    gen = torch.Generator().manual_seed(9)
    P = random_weights(cfg, gen)
    out = {"w." + k: v for k, v in P.items()}
    meta = {"config": meta_of(cfg), "tasks": {}}
    for task, path, to_doc in (("arc_easy", "arc_easy.jsonl", arc_doc),
                               ("hellaswag", "hellaswag.jsonl", hellaswag_doc)):
        docs = [to_doc(json.loads(l)) for l in open(os.path.join(TINY, path)) if l.strip()]
        logliks = []
        for d in docs:
            row = []
            for c in d["choices"]:
                ctx, cont = encode_pair(sp, d["context"], " " + c)
                ids = torch.tensor([ctx + cont])
                with torch.no_grad():
                    logp = F.log_softmax(model_forward(Ctx(cfg), P, ids)[0].double(), -1)
                n = len(ctx)
                row.append(sum(logp[n - 1 + j, t].item() for j, t in enumerate(cont)))
            logliks.append(row)
        acc = sum(max(range(len(r)), key=lambda i: r[i]) == d["gold"] for r, d in zip(logliks, docs))
        acc_norm = sum(
            max(range(len(r)), key=lambda i: r[i] / len(d["choices"][i])) == d["gold"]
            for r, d in zip(logliks, docs))
        meta["tasks"][task] = {"docs": docs, "logliks": logliks, "acc": acc / len(docs),
                               "acc_norm": acc_norm / len(docs)}
        print(f"{task}: acc {acc / len(docs):.4f} acc_norm {acc_norm / len(docs):.4f}")
    write_fixture(os.path.join(OUT, "harness_reference.safetensors"), out, meta)


if __name__ == "__main__":
    main()
