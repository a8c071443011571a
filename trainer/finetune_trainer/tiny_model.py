"""A tiny Llama-architecture model and a tokenizer, made here instead of downloaded.

Model hubs are out of reach on CI and on the quickstart's laptop, but the loading code must be the real one.
So we *create* a model the way a hub model was created — random init from a `LlamaConfig`, a BPE tokenizer
trained with `tokenizers` on the dataset's own text, both written with `save_pretrained` — and from then on
the trainer loads it through `AutoModelForCausalLM.from_pretrained` like any other model directory.

Digits are split one per token so arithmetic-like tasks are learnable by a model this small. The output
head is scaled up after the random init: a random head's rows are so short that, behind the final RMSNorm,
no hidden state can give any token more than a few percent probability — a frozen-head method (LoRA) could
then never fit the data, while a pretrained model's head has no such limit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

from finetune_trainer.data.chat import CHATML_TEMPLATE  # the house default template, also used for the tiny model

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]


def texts_of_jsonl(paths: Iterable[Path]) -> list[str]:
    """Every string value of every JSON line in `paths` (nested lists/dicts included), for tokenizer training."""
    out: list[str] = []

    def walk(v) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            if line.strip():
                walk(json.loads(line))
    return out


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (digits split) wrapped as a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def create_tiny_model(out_dir: str | Path, corpus: list[str], *, hidden: int = 128, layers: int = 4,
                      heads: int = 4, vocab_size: int = 512, seed: int = 0, head_scale: float = 10.0) -> Path:
    """Write a random-init Llama model + trained tokenizer to `out_dir` (atomically: temp dir, then rename).

    Args:
        out_dir: directory to create; must not exist yet.
        corpus: texts to train the tokenizer on.
        hidden, layers, heads, vocab_size: model size (defaults give ~0.9M parameters).
        seed: torch seed for the random init.
        head_scale: factor on the random output head (see the module docstring).

    Returns:
        The directory written.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tokenizer = train_tokenizer(corpus, vocab_size)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2 + hidden // 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048, tie_word_embeddings=False, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune_trainer.tiny_model --out DIR --corpus a.jsonl [b.jsonl ...]`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory to create (left alone if it exists)")
    ap.add_argument("--corpus", nargs="+", required=True, help="JSONL files whose strings train the tokenizer")
    args = ap.parse_args(argv)
    if Path(args.out).exists():
        print(f"{args.out}: exists, kept")
        return 0
    create_tiny_model(args.out, texts_of_jsonl(Path(p) for p in args.corpus))
    print(f"{args.out}: created a tiny Llama model and tokenizer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
