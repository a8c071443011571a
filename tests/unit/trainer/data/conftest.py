"""Small builders for the data tests: JSONL files in tmp_path, a BOS-adding tokenizer, trained-text readers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

CHAT = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "Is 1234 even or odd?"},
    {"role": "assistant", "content": "even"},
    {"role": "user", "content": "What day comes after Monday?"},
    {"role": "assistant", "content": "Tuesday"},
]

# One good line per format.
GOOD = {
    "alpaca": {"instruction": "Translate to French:", "input": "cat", "output": "chat"},
    "messages": {"messages": CHAT},
    "sharegpt": {"conversations": [{"from": "system", "value": "Answer briefly."},
                                   {"from": "human", "value": "Is 1234 even or odd?"},
                                   {"from": "gpt", "value": "even"}]},
    "prompt-completion": {"prompt": "Is 1234 even or odd? ", "completion": "even"},
    "text": {"text": "The quick brown fox jumps over the lazy dog."},
    "preference": {"prompt": "Is 1234 even or odd? ", "chosen": "even", "rejected": "odd"},
}


@pytest.fixture
def chat() -> list[dict]:
    """A system prompt and two user/assistant exchanges (a fresh copy per test)."""
    return copy.deepcopy(CHAT)


@pytest.fixture
def good() -> dict:
    """One valid line per format, keyed by format name (a fresh copy per test)."""
    return copy.deepcopy(GOOD)


@pytest.fixture
def write_jsonl(tmp_path):
    """`write_jsonl(lines, name="data.jsonl") -> Path`: objects become JSON lines; str/bytes are written raw."""

    def write(lines, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = b""
        for line in lines:
            if isinstance(line, bytes):
                raw += line + b"\n"
            elif isinstance(line, str):
                raw += line.encode("utf-8") + b"\n"
            else:
                raw += json.dumps(line).encode("utf-8") + b"\n"
        path.write_bytes(raw)
        return path

    return write


def _trained_runs(tokenizer, example: dict) -> list[str]:
    """The decoded runs of consecutive trained tokens (labels != -100) of an encoded example."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != -100:
            assert label == token, "a trained label must be the token itself"
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def _masked_text(tokenizer, example: dict) -> str:
    """The decoded tokens that are not trained (labels == -100)."""
    return tokenizer.decode([t for t, lab in zip(example["input_ids"], example["labels"]) if lab == -100])


@pytest.fixture
def trained_runs():
    """`trained_runs(tokenizer, example) -> [str]`: decoded runs of consecutive trained tokens."""
    return _trained_runs


@pytest.fixture
def masked_text():
    """`masked_text(tokenizer, example) -> str`: the decoded untrained tokens."""
    return _masked_text


@pytest.fixture(scope="session")
def bos_tokenizer(tiny_tokenizer):
    """The tiny tokenizer made Llama-style: its post-processor adds `<s>` to every encoded text."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tiny_tokenizer.backend_tokenizer.to_str())
    bos = tiny_tokenizer.bos_token_id
    backend.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="<|im_end|>",
                                  unk_token="<unk>", pad_token="<pad>")
    tok.chat_template = tiny_tokenizer.chat_template
    assert tok("a")["input_ids"][0] == bos
    return tok
