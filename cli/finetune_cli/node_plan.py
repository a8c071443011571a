"""`finetune plan --model <hub id or folder> --node 2xH200`: what fits on a node, as a table of methods x strategies.

The planning is finetune_plan.node's (the trainer's own planner, per cell); this module finds the model's shape
(the catalog of well-known hub ids, or the folder's config.json), picks the node (a preset, overridden by --gpus,
--gpu-memory, --host-memory) and prints the table. Pure formatting apart from reading config.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from finetune_api.contract import UserError
from finetune_plan.memory import GiB, ModelShape, parse_bytes


def model_shape(model: str) -> ModelShape:
    """The shape of `model`: a folder with config.json, or a hub id from the catalog.

    Raises:
        UserError: neither (names what was tried and what to do).
    """
    from finetune_plan.catalog import SHAPES, shape_for_hub_id

    folder = Path(model)
    if (folder / "config.json").is_file():
        try:
            return ModelShape.from_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"--model {model}: config.json does not describe a decoder-only transformer ({e})") \
                from None
    shape = shape_for_hub_id(model)
    if shape is None:
        raise UserError(f"--model {model}: not a folder with config.json, and not a hub id this planner knows "
                        f"(known: {', '.join(sorted(SHAPES))}); download the model's config.json and pass its folder")
    return shape


def this_machine_host_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def pick_node(args):
    """The node to plan for: the preset (--node), with --gpus/--gpu-memory/--host-memory over it."""
    from finetune_plan.node import Node, node_for

    if args.node:
        node = node_for(args.node)
    elif args.gpu_memory and args.gpus:
        node = Node(f"{args.gpus}x{args.gpu_memory}", args.gpus, parse_bytes(args.gpu_memory),
                    this_machine_host_bytes(), "host memory: this machine's")
    else:
        raise UserError("finetune plan --model needs --node (e.g. 2xH200) or --gpus and --gpu-memory")
    if args.gpus and args.node:
        node = replace(node, gpus=args.gpus, name=f"{node.name} with {args.gpus} GPU(s)")
    if args.gpu_memory and args.node:
        node = replace(node, gpu_bytes=parse_bytes(args.gpu_memory))
    if args.host_memory:
        node = replace(node, host_bytes=parse_bytes(args.host_memory), assumed=node.assumed + "; host memory "
                       f"{args.host_memory} as given")
    return node


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def describe_model(name: str, m: ModelShape) -> str:
    text = f"{name}: {m.params / 1e9:.1f}B parameters"
    if m.moe:
        text += (f" (a mixture of experts: {m.experts} experts, {m.experts_per_token} per token, "
                 f"{m.active_params / 1e9:.1f}B active; LoRA's all-linear adapts its attention only)")
    return text


def render(model: str, shape: ModelShape, node, cells, max_length: int, global_batch: int) -> str:
    """The table `finetune plan --model --node` prints."""
    from .job_view import table

    head = [describe_model(model, shape),
            f"node {node.name}: {node.gpus} GPU(s) x {node.gpu_bytes / GiB:.0f} GiB, host {node.host_bytes / GiB:.0f}"
            f" GiB ({node.assumed})" if node.assumed else
            f"node {node.name}: {node.gpus} GPU(s) x {node.gpu_bytes / GiB:.0f} GiB, host "
            f"{node.host_bytes / GiB:.0f} GiB",
            f"each cell planned by finetune_plan.plan_launch for maxLength {max_length}, {global_batch} examples per "
            "step; GiB per GPU at the training peak, host GiB per node at its peak (the phase in brackets), load = "
            "the whole model on each GPU before sharding", ""]
    rows = [["METHOD", "STRATEGY", "FITS", "GPU", "BATCH", "CKPT", "HOST", "LOAD", "DISK CKPT/OUT", "WHY NOT"]]
    for c in cells:
        rows.append([c.method, c.label, "yes" if c.fits else "no", _num(c.gpu_gib),
                     f"{c.micro}x{c.accumulation}" if c.micro else "-", c.checkpointing or "-",
                     f"{_num(c.host_gib, '{:.0f}')} ({c.host_phase})", _num(c.gpu_load_gib, "{:.0f}"),
                     f"{_num(c.checkpoint_gib)}/{_num(c.output_gib)}", "; ".join(c.why)])
    return "\n".join(head) + table(rows)


def cmd_node_plan(args) -> int:
    """Print the methods x strategies table for --model on --node."""
    from finetune_plan.node import node_table

    shape = model_shape(args.model)
    node = pick_node(args)
    cells = node_table(args.model, shape, node, args.max_length, args.global_batch)
    print(render(args.model, shape, node, cells, args.max_length, args.global_batch))
    return 0


# --- docs/node-plans.md: the 2xH200 table, each cell marked measured (bench/results) or predicted ----------------

DOC_MODELS = ("meta-llama/Llama-3.2-1B", "mistralai/Mistral-7B-v0.3", "meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-14B",
              "Qwen/Qwen2.5-32B", "meta-llama/Llama-3.1-70B", "Qwen/Qwen2.5-72B", "openai/gpt-oss-120b")
# Peaks measured through `finetune run` on 2xH200, maxLength 2048 packed (model, method, strategy) ->
# (GiB per GPU, micro x accumulation, tokens/s per GPU, MFU, source[, what happened instead of a peak])
MEASURED = {
    ("meta-llama/Llama-3.1-8B", "full", "fsdp"): (118.2, "8x1", 10664, 0.500,
                                                  "multi-gpu-h200-w4-fsdp-planner-8x1-30steps-2026-11-30.json"),
    ("meta-llama/Llama-3.1-8B", "full", "deepspeed-zero3"): (108.6, "4x2", 9721, 0.456,
                                                             "multi-gpu-h200-w4-deepspeed-zero3-2026-11-30.json"),
    ("meta-llama/Llama-3.1-8B", "lora", "ddp"): (67.6, "4x3", 14703, 0.470,
                                                 "multi-gpu-h200-w5-dropout-0.05-2026-11-30.json"),
    ("meta-llama/Llama-3.2-1B", "full", "fsdp"): (27.1, "8x1", 57913, 0.454,
                                                  "multi-gpu-h200-small-w4-resume-2026-11-30.json"),
    ("meta-llama/Llama-3.2-1B", "full", "deepspeed-zero3"): (54.2, "8x1", 48371, 0.379,
                                                             "multi-gpu-h200-small-w4-resume-2026-11-30.json"),
    ("meta-llama/Llama-3.1-70B", "lora", "fsdp"): (118.3, "1x8", 1348, 0.390, "multi-gpu-h200-w6-2026-11-30.json",
                                                  "**measured with `dropout: 0`** (planned 114 GiB for that): 118.3 "
                                                  "GiB/GPU, 1,348 tok/s/GPU, 39.0% MFU "
                                                  "(`multi-gpu-h200-w6-2026-11-30.json`)"),
    # one H200 (a DDP replica holds the same per GPU at the same micro-batch): micro 1 x 16 there, 1 x 8 here
    ("meta-llama/Llama-3.1-70B", "qlora", "ddp"): (104.6, "1x8", 1592, 0.460, "multi-gpu-h200-w6q-2026-11-30.json"),
}
DOC_FILE = "node-plans.md"


def _doc_cell(model: str, shape: ModelShape, node, cells) -> str:
    """The first cell that fits (no offload before offload), marked measured or predicted; else why not.

    A measured cell shows the plan for the measured run's own batch shape next to the measured peak.
    """
    from finetune_plan.node import plan_cell

    fit = next((c for c in cells if c.fits and not c.offload), None) or next((c for c in cells if c.fits), None)
    if fit is None:
        best = min(cells, key=lambda c: (len(c.why), c.host_gib or 0))
        return f"no — {best.label}: " + "; ".join(best.why)
    m = MEASURED.get((model, fit.method, fit.strategy)) if not fit.offload else None
    if m:
        micro, acc = (int(x) for x in m[1].split("x"))
        if (fit.micro, fit.accumulation) != (micro, acc):
            fit = plan_cell(model, shape, node, fit.method, fit.strategy, fit.offload, batch=(micro, acc))
    text = (f"{fit.label}: {fit.gpu_gib:.0f} GiB/GPU at {fit.micro}x{fit.accumulation}, host {fit.host_gib:.0f} GiB, "
            f"checkpoint {fit.checkpoint_gib:.1f} GiB")
    if m and len(m) > 5:
        return text + f" — predicted; {m[5]}"
    if m:
        return text + f" — **measured** {m[0]} GiB/GPU, {m[2]:,} tok/s/GPU, {m[3]:.1%} MFU (`{m[4]}`)"
    return text + " — predicted"


def docs_table() -> str:
    """docs/node-plans.md's text (python -m finetune_cli.node_plan writes it; a test fails when it is stale)."""
    from finetune_plan.catalog import shape_for_hub_id
    from finetune_plan.node import node_for, node_table

    node = node_for("2xH200")
    lines = ["# What fits on 2xH200", "",
             "Generated by `python -m finetune_cli.node_plan` (`make plan-doc`) from the planner the trainer obeys "
             "(`finetune plan --model <id> --node 2xH200` prints every strategy of one model). Node: "
             f"{node.assumed}. maxLength 2048, 16 examples per step. Each cell is the first strategy that fits, in "
             "this order: DDP, FSDP2, ZeRO-2, ZeRO-3, then the same with cpuOffload; figures are the peak GPU "
             "memory per GPU, the peak host memory of the node, and one resumable checkpoint. **measured** cells "
             "ran through `finetune run` on 2xH200 (`bench/results/`); the planner is within 10% of each "
             "(tests/unit/plan/test_memory.py). Everything else is predicted.", "",
             "| model | parameters | lora | qlora | full | spectrum |", "| --- | --- | --- | --- | --- | --- |"]
    for model in DOC_MODELS:
        shape = shape_for_hub_id(model)
        cells = node_table(model, shape, node)
        params = f"{shape.params / 1e9:.1f}B" + (f" ({shape.active_params / 1e9:.1f}B active)" if shape.moe else "")
        row = [f"`{model}`", params]
        for method in ("lora", "qlora", "full", "spectrum"):
            row.append(_doc_cell(model, shape, node, [c for c in cells if c.method == method]))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Reading it", "",
              "- **Full fine-tuning of 70B on 2xH200 does not fit, with or without offloading.** Without it, the "
              "fp32 master weights, gradients and AdamW state alone are 16 bytes x 70.6B = 1.03 TiB, 526 GiB per "
              "GPU when sharded over two. With `cpuOffload` the GPUs hold 88-94 GiB, but that state moves to the "
              "host: ~1.0-1.2 TiB per node, four times a 256 GiB host (and more than the 512 GiB of a larger "
              "2-GPU instance). The \"70B full without offloading on 2xH200\" of the seeds' guides is not true for "
              "AdamW in mixed precision; LoRA (FSDP2) or QLoRA is how 70B trains on this node.",
              "- **LoRA on 70-72B** fits with FSDP2 because the trainer loads it straight into its shards (each "
              "rank reads its half of the safetensors onto its GPU): measured 118.3 GiB per GPU. DDP and "
              "DeepSpeed load the plain way - each of the two processes materialises the 131 GiB bf16 model in "
              "host memory (272 GiB, more than 256) and then moves it whole onto its GPU.",
              "- **QLoRA on 70B** runs on one H200 at the planner's pick (micro 1, no checkpointing: 104.6 GiB, "
              "46.0% MFU). LoRA dropout (the default 0.05) costs memory: each adapted linear keeps its dropped "
              "input and mask (3 bytes per input element; 35 GiB of this 70B run's peak); `dropout: 0` frees it.",
              "- **gpt-oss-120b** is a mixture of experts (116.8B parameters, 4 of 128 experts per token): the "
              "planner counts every expert's weights and only the active experts' activations. Its hub weights "
              "are MXFP4; the trainer loads them as bf16 (218 GiB) the plain way (its architecture is not one "
              "FSDP2 loads into shards), whole onto each GPU, which no 140 GiB GPU holds, and bitsandbytes' 4-bit "
              "quantization (QLoRA) covers `nn.Linear` layers, not its fused expert tensors. So every method is out "
              "of this trainer's reach on 2xH200 today; the seeds' tutorial (LoRA on 2xH200) depends on loading the "
              "MXFP4 weights sharded, which the trainer does not do yet.",
              "- Host memory is an estimate (not yet measured against a node's peak, unlike the GPU plan): "
              "4 GiB per process, the model materialised by each process while loading (not when loading into "
              "shards), offloaded state, checkpoint copies and the CPU merge (plan/finetune_plan/host.py says what "
              "each phase counts).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    out = Path(__file__).resolve().parents[2] / "docs" / DOC_FILE
    out.write_text(docs_table() + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
