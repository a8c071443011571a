"""finetune_trainer: the code a trainer pod runs, and `finetune run` runs locally.

launch (spec -> torchrun argv) -> entrypoint (one process per GPU/CPU) -> recipe (setup, train, save).
Heavy imports (torch, transformers) happen inside the modules that need them, so `finetune validate`
and `finetune explain` start fast.
"""
