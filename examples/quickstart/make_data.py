"""Generate the quickstart's dataset: two small tasks a tiny model can learn in minutes on a CPU.

- parity: "Is 4821 even or odd?" -> "odd" (the answer depends on the last digit; digits are single tokens)
- weekdays: "What day comes after Friday?" -> "Saturday"

Held-out prompts use numbers never seen in training, so exact match on them measures learning, not
memorisation. Deterministic (seeded); the JSONL it writes is checked in, this script documents how.
Run: python examples/quickstart/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PARITY_PROMPTS = ["Is {n} even or odd?", "Is the number {n} even or odd?", "{n}: even or odd?",
                  "Tell me if {n} is even or odd."]
DAY_PROMPTS = ["What day comes after {d}?", "Which day follows {d}?", "The day after {d} is?"]
SYSTEM = "Answer with one word."


def example(rng: random.Random, numbers: list[int]) -> dict:
    if rng.random() < 0.7:
        n = numbers.pop()
        user, answer = rng.choice(PARITY_PROMPTS).format(n=n), "even" if n % 2 == 0 else "odd"
    else:
        i = rng.randrange(7)
        user, answer = rng.choice(DAY_PROMPTS).format(d=DAYS[i]), DAYS[(i + 1) % 7]
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if rng.random() < 0.5:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    return {"messages": messages}


def main() -> None:
    rng = random.Random(1234)
    numbers = rng.sample(range(100, 100000), 2000)
    train_numbers, heldout_numbers = numbers[:1500], numbers[1500:]
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, count, pool in (("train.jsonl", 800, train_numbers), ("validation.jsonl", 100, heldout_numbers)):
        rows = [example(rng, pool) for _ in range(count)]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(out / name, len(rows))


if __name__ == "__main__":
    main()
