"""The seed-style baseline of ../shared/benchmark.md: what a user writes by hand today, kept deliberately plain.

transformers `Trainer` + peft on the same model and data: `DataCollatorForSeq2Seq` padding to the longest
example of each batch, per-device batch 4, gradient checkpointing (non-reentrant), SDPA attention, bf16
weights, fused AdamW, cosine schedule with warmup, gradient clipping 1.0. Nothing here is tuned; a
speed-up measured against it must come from our trainer, not from a handicapped baseline.

The only departures from a tutorial are for the measurement: the examples are fed in a given order (so the
baseline's step k sees exactly the examples of our step k, for the loss comparison), and a callback times
each step and keeps the logged loss. The loss Trainer logs is the token-weighted mean over the step's
trainable tokens (transformers 5 divides the summed loss by `num_items_in_batch`), as ours is.
"""

from __future__ import annotations

import time
from pathlib import Path

from workloads import Workload, device, pad_id, trainable_tokens


def _pad_tokenizer(pad: int):
    """A tokenizer that can only pad (DataCollatorForSeq2Seq pads through `tokenizer.pad`); ids pass through."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": pad}, unk_token="<pad>")),
                                  pad_token="<pad>")
    tok.padding_side = "right"
    return tok


def run_baseline(w: Workload, model_dir: Path, examples: list[dict], *, steps: int, lr: float, warmup_steps: int,
                 seed: int, out_dir: Path, log=print) -> dict:
    """Train `steps` steps of `w.baseline_batch` examples, in the order given; return per-step numbers.

    Returns:
        {"steps": [{"step", "loss", "seconds", "real_tokens", "trainable_tokens"}], "peak_alloc_gib",
         "peak_reserved_gib", "setup_seconds"}.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    t_setup = time.perf_counter()
    gpu = device() == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    if w.method == "qlora":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa",
                                                     quantization_config=quant, device_map={"": 0})
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        model.to(device())
    model.config.use_cache = False
    if w.method in ("lora", "qlora"):
        torch.manual_seed(seed)
        model = get_peft_model(model, LoraConfig(r=w.lora_rank, lora_alpha=w.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    batch = w.baseline_batch
    data = examples[:steps * batch]
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=warmup_steps, weight_decay=0.0, max_grad_norm=1.0,
        bf16=gpu, use_cpu=not gpu, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        optim="adamw_torch_fused" if gpu else "adamw_torch", logging_steps=1, save_strategy="no", report_to=[], seed=seed,
        dataloader_num_workers=0, disable_tqdm=True,
    )

    class Ordered(Trainer):
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    timer = _StepTimer()
    trainer = Ordered(model=model, args=args, train_dataset=data, callbacks=[timer],
                      data_collator=DataCollatorForSeq2Seq(_pad_tokenizer(pad_id(w.config)), padding="longest",
                                                           label_pad_token_id=-100))
    setup = time.perf_counter() - t_setup
    trainer.train()
    rows = []
    for k in range(steps):
        chunk = data[k * batch:(k + 1) * batch]
        rows.append({"step": k + 1, "loss": timer.losses[k] if k < len(timer.losses) else None,
                     "seconds": timer.seconds[k], "real_tokens": sum(len(e["input_ids"]) for e in chunk),
                     "trainable_tokens": sum(trainable_tokens(e) for e in chunk)})
    out = {"steps": rows, "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0,
           "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if gpu else 0.0, "setup_seconds": setup}
    del trainer, model
    _free()
    return out


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _StepTimer():  # noqa: N802 - builds the callback lazily, so importing this module needs no transformers
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step (end to end, data loading included) and the logged loss."""

        def __init__(self):
            self.seconds: list[float] = []
            self.losses: list[float] = []
            self._last = 0.0

        def on_train_begin(self, args, state, control, **kw):
            _sync()
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            _sync()
            now = time.perf_counter()
            self.seconds.append(now - self._last)
            self._last = now

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    def _sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return StepTimer()
