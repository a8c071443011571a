"""Generate the preference example's data: pairs a tiny model can learn to rank on a CPU in a minute.

Each pair asks one of the quickstart's questions and prefers the right answer over a wrong one:

- parity: "Is 4821 even or odd?" chosen "odd", rejected "even" (the last digit decides; digits are single tokens)
- weekdays: "What day comes after Friday?" chosen "Saturday", rejected another day

Held-out pairs use numbers never seen in training and a weekday phrasing never seen in training, so
preference accuracy on them (does the model's implicit reward rank the right answer first?) measures learning,
not memorisation of pairs. Weekdays are 70% of the pairs: a tiny model learns them in tens of steps, parity
takes longer. Deterministic (seeded); the JSONL it
writes is checked in, this script documents how. Run: python examples/preference/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PARITY_PROMPTS = ["Is {n} even or odd?", "Is the number {n} even or odd?", "{n}: even or odd?"]
DAY_PROMPTS = ["What day comes after {d}?", "Which day follows {d}?"]
HELDOUT_DAY_PROMPTS = ["The day after {d} is?"]  # a phrasing only the validation pairs use


def pair(rng: random.Random, numbers: list[int], day_prompts: list[str]) -> dict:
    if rng.random() < 0.3:
        n = numbers.pop()
        user, good = rng.choice(PARITY_PROMPTS).format(n=n), "even" if n % 2 == 0 else "odd"
        bad = "odd" if good == "even" else "even"
    else:
        i = rng.randrange(7)
        user, good = rng.choice(day_prompts).format(d=DAYS[i]), DAYS[(i + 1) % 7]
        bad = rng.choice([d for d in DAYS if d != good])
    return {"prompt": [{"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}]}


def main() -> None:
    rng = random.Random(4321)
    numbers = rng.sample(range(100, 100000), 1000)
    train_numbers, heldout_numbers = numbers[:800], numbers[800:]
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, count, pool, prompts in (("train.jsonl", 600, train_numbers, DAY_PROMPTS),
                                       ("validation.jsonl", 60, heldout_numbers, HELDOUT_DAY_PROMPTS)):
        rows = [pair(rng, pool, prompts) for _ in range(count)]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(out / name, len(rows))


if __name__ == "__main__":
    main()
