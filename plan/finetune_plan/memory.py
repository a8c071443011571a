"""The memory planner: from model config, method, strategy, length and GPU memory to a batch/strategy plan.

Pure arithmetic (no deep-learning import): `finetune plan job.yaml --gpu-memory 141GiB --gpus 2` plans for a
machine you do not have, and the launch plan (launch.py) uses the same functions for the GPU a run gets. Per GPU it estimates, in bytes:

    weights      N x bytes/param (bf16 2; NF4 + double quant 0.52 for QLoRA's block linears, its other
                 parameters bf16; fp32 4 for full/Spectrum, whose master weights stay fp32 under bf16 autocast,
                 plus the bf16 copies autocast caches of the trainable ones on one process / DDP), / world when
                 sharded (FSDP, ZeRO-3), plus two unsharded blocks in bf16 in flight; only those two blocks
                 with cpuOffload under FSDP / ZeRO-3
    gradients    4 x trainable (fp32), / world for ZeRO-2, ZeRO-3 and FSDP; 0 when offloaded (FSDP / ZeRO-3);
                 FSDP2 on several GPUs: unsharded under accumulation, and with one micro-batch per step only what
                 exceeds the activations (they are made as those are freed) plus one block's before its reduce-scatter
    optimizer    8 x trainable (AdamW's two fp32 moments), / world when sharded; 0 with cpuOffload
    activations  per token per block: with Liger's kernels and the fast LoRA forward (LoRA, QLoRA, full
                 under FSDP2 or DeepSpeed; `fused_kernels`) the bf16 tensors kept are the two norm inputs and
                 outputs, roped q, k, v, the attention output, and the MLP's gate, up and product (with LoRA
                 dropout, instead of the norm outputs and product: each adapted linear's dropped input and its
                 mask, 3 bytes x its input width); without them
                 (full under autocast) also fp32 norm intermediates and the activation; a checkpointed block
                 keeps only its input, and is recomputed (one at a time) after the uncheckpointed blocks after
                 it have freed theirs
    logits       per token: vocab x 10 bytes (bf16 logits, their fp32 upcast and log-softmax at the peak);
                 0 with Liger's fused linear cross-entropy, which never materialises them
    workspace    a fixed 1 GiB (CUDA/cuBLAS workspaces, allocator slack)

and chooses, in this order of preference: among the candidates it is given (launch_plan.auto_candidates: ddp, then
fsdp full shard, for `strategy: auto`) the first that fits; no activation checkpointing if any micro-batch fits without it; the largest
power-of-two micro-batch that fits (at most globalBatchSize / processes); with checkpointing, only as many
blocks as memory needs at that micro-batch (the first k of L; each checkpointed block costs its forward again,
each one left out saves that time); accumulation to reach the global batch. Calibrated against measured peaks
on an H100 (bench/results/planner-h100-2026-11-25.json: W1 LoRA and W2 QLoRA on Llama-3.1-8B, W3 full on Llama-3.2-1B, FSDP and QLoRA through `finetune run`); the constants are
here. Multi-GPU terms (FSDP2's unsharded gradients under accumulation, ZeRO-3's logits) were calibrated on
2xH200 (bench/results/multi-gpu-h200-*-2026-11-30.json); tests/unit/plan/test_memory.py holds every measured row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from finetune_api.contract import UserError

GiB = 1024 ** 3
WORKSPACE = 1 * GiB
HEADROOM = 0.92  # plan to at most this share of the GPU's memory
NF4_BYTES = 0.516  # 4 bits + double-quantised absmax (8 bits per 64 weights, itself quantised per 256)
LOGIT_BYTES = 10  # per token x vocab at the loss's peak without a fused loss (measured 9-10 on W2/W3)
LOGIT_BYTES_ZERO3 = 13  # the same under ZeRO-3 (no fused loss there): 13.3 and 12.9 measured on 2xH200 (W4, W4-1B)


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer the estimate needs (read off its config.json).

    A mixture-of-experts model (`experts` > 0: gpt-oss, Mixtral, Qwen3-MoE) has, in each block, `experts` MLPs of
    width `intermediate` and a router, of which `experts_per_token` run for each token: weights, gradients and
    optimizer state count every expert (total parameters), activations only the active ones. Its experts are
    fused 3-D parameters in transformers, not `nn.Linear`s, so LoRA's `all-linear` adapts the attention only.
    """

    vocab: int
    hidden: int
    intermediate: int  # the MLP's width (one expert's, for a mixture of experts)
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    experts: int = 0  # 0: a dense model
    experts_per_token: int = 0
    model_type: str = ""  # config.json's model_type (llama, qwen2, gpt_oss, ...): how the trainer can load it

    @classmethod
    def from_config(cls, c: dict) -> "ModelShape":
        """From a transformers config dict (Llama, Qwen, Mistral, Gemma naming; gpt-oss/Mixtral/Qwen3-MoE experts)."""
        c = dict(c.get("text_config") or {}, **{k: v for k, v in c.items() if k != "text_config"})
        heads = c["num_attention_heads"]
        experts = int(c.get("num_local_experts") or c.get("num_experts") or 0)
        inter = c.get("moe_intermediate_size") if experts and c.get("moe_intermediate_size") else c["intermediate_size"]
        return cls(vocab=c["vocab_size"], hidden=c["hidden_size"], intermediate=inter,
                   layers=c["num_hidden_layers"], heads=heads, kv_heads=c.get("num_key_value_heads") or heads,
                   head_dim=c.get("head_dim") or c["hidden_size"] // heads, tied=bool(c.get("tie_word_embeddings")),
                   experts=experts, experts_per_token=int(c.get("num_experts_per_tok") or 0) if experts else 0,
                   model_type=str(c.get("model_type") or ""))

    @property
    def moe(self) -> bool:
        return self.experts > 0

    def attention_linears(self) -> dict[str, tuple[int, int]]:
        d, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d)}

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each `nn.Linear` of one block (LoRA's and Spectrum's candidates), by name."""
        if self.moe:
            return self.attention_linears()
        d, i = self.hidden, self.intermediate
        return self.attention_linears() | {"gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d)}

    @property
    def active_intermediate(self) -> int:
        """The MLP width one token passes through (its experts' together, for a mixture of experts)."""
        return self.intermediate * (self.experts_per_token if self.moe else 1)

    @property
    def block_params(self) -> int:
        attention = sum(a * b for a, b in self.attention_linears().values()) + 2 * self.hidden
        if self.moe:  # gate/up/down of every expert, plus the router
            return attention + self.experts * 3 * self.hidden * self.intermediate + self.hidden * self.experts
        return attention + 3 * self.hidden * self.intermediate

    @property
    def active_params(self) -> int:
        """Parameters one token's forward uses (all of them for a dense model)."""
        if not self.moe:
            return self.params
        idle = self.layers * (self.experts - self.experts_per_token) * 3 * self.hidden * self.intermediate
        return self.params - idle

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.embed_params * (1 if self.tied else 2) + self.hidden


@dataclass(frozen=True)
class Workload:
    """What is trained, how, and on what."""

    method: str  # lora | qlora | full | spectrum
    strategy: str  # single | ddp | fsdp | fsdp-shard-grad-op | deepspeed-zero2 | deepspeed-zero3
    world: int
    seq_len: int
    gpu_bytes: int
    lora_rank: int = 16
    lora_targets: tuple[str, ...] | None = None  # None: all linear
    lora_dropout: float = 0.0  # spec.method.lora.dropout: > 0 keeps a dropped copy of each adapted linear's input
    spectrum_fraction: float = 0.25
    cpu_offload: bool = False
    rows_per_example: int = 1  # 2 for preference pairs (chosen + rejected)
    fused_kernels: bool = True  # liger-kernel installed: the trainer applies it where _liger() says

    @property
    def adapter(self) -> bool:
        """Adapters on a frozen base (lora, qlora)."""
        return self.method in ("lora", "qlora")


def _liger(w: "Workload") -> bool:
    """Whether the trainer runs Liger's kernels (and, for LoRA, the fast forward): on bf16 compute weights
    (modeling.bf16_compute_weights), i.e. not for full/Spectrum under autocast (one process, DDP)."""
    return w.fused_kernels and (w.adapter or w.strategy.startswith("deepspeed")
                                or w.strategy in ("fsdp", "fsdp-shard-grad-op"))


def _fused_loss(w: "Workload") -> bool:
    """Liger's fused linear cross-entropy: with its kernels, except under ZeRO-3 (modeling.load_model)."""
    return _liger(w) and w.strategy != "deepspeed-zero3"


@dataclass
class Estimate:
    """Predicted peak allocated bytes per GPU, by part."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    workspace: float = WORKSPACE

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.workspace

    def as_gib(self) -> dict[str, float]:
        parts = ("weights", "gradients", "optimizer", "activations", "logits", "workspace")
        return {k: round(getattr(self, k) / GiB, 2) for k in parts} | {"total": round(self.total / GiB, 2)}


def trainable_params(m: ModelShape, w: Workload) -> int:
    """Parameters the optimizer updates."""
    if w.method == "full":
        return m.params
    if w.method == "spectrum":
        k = max(1, math.floor(m.layers * w.spectrum_fraction + 1e-9))
        return k * sum(a * b for a, b in m.linears().values())
    targets = m.linears() if w.lora_targets is None else {n: s for n, s in m.linears().items() if n in w.lora_targets}
    return m.layers * sum(w.lora_rank * (a + b) for a, b in targets.values())


def estimate(m: ModelShape, w: Workload, micro: int, checkpointing: bool, layers: int | None = None,
             accumulation: int = 1) -> Estimate:
    """Peak bytes per GPU for one micro-batch of `micro` examples of `seq_len` tokens.

    Args:
        layers: with checkpointing, how many blocks are checkpointed (default: all).
        accumulation: micro-batches per step. Under FSDP2 on several GPUs, the micro-batches before the last
            skip the reduce-scatter (`set_requires_gradient_sync(False)`), so the gradients accumulate unsharded,
            in fp32 (the reduce dtype): measured on W4 (8B full, 2xH200, micro 4 x 2): 113.9 GiB peak, where
            sharded gradients would give 96.
    """
    shard_params = w.strategy in ("fsdp", "deepspeed-zero3") and w.world > 1
    shard_grads = shard_params or (w.strategy in ("fsdp-shard-grad-op", "deepspeed-zero2") and w.world > 1)
    n, nt = m.params, trainable_params(m, w)
    offload = w.cpu_offload and w.strategy in ("fsdp", "deepspeed-zero3")  # parameters leave the GPU too
    if w.method == "qlora":
        block_linear = m.layers * sum(a * b for a, b in m.linears().values())
        weights = block_linear * NF4_BYTES + (n - block_linear) * 2  # embeddings, head, norms: bf16
    elif not w.adapter:
        weights = 4 * n
        if w.strategy in ("ddp", "single"):
            weights += 2 * nt  # autocast caches a bf16 copy of each trainable fp32 weight through backward
    else:
        weights = 2 * n
    adapters = nt * 4 if w.adapter else 0  # peft keeps adapters in fp32
    weights += adapters
    if shard_params:
        weights = weights / w.world + 2 * m.block_params * 2  # two unsharded bf16 blocks in flight
    if offload:
        weights = 2 * m.block_params * 2
    grads = 0.0 if offload else 4 * nt / (w.world if shard_grads else 1)
    if accumulation > 1 and w.world > 1 and w.strategy in ("fsdp", "fsdp-shard-grad-op") and not offload:
        grads = 4 * nt  # unsharded fp32 gradients accumulate between reduce-scatters
    optim = 0.0 if w.cpu_offload else 8 * nt / (w.world if shard_grads else 1)
    tokens = micro * w.seq_len * w.rows_per_example
    k = (m.layers if layers is None else max(0, min(layers, m.layers))) if checkpointing else 0
    block = _block_activation_bytes(m, w)
    # backward recomputes checkpointed blocks only after the later, uncheckpointed ones have freed theirs
    act = tokens * (block * max(m.layers - k, 1 if k else 0) + 2 * m.hidden * k)
    if accumulation == 1 and shard_params and w.strategy == "fsdp" and not offload:
        # one micro-batch per step: the sharded gradients are freed after each step (zero_grad set_to_none) and
        # made block by block in backward while that block's activations are freed, so they never sit beside
        # the whole forward's activations: the peak is the larger of the two, plus one block's unsharded fp32
        # gradients before their reduce-scatter. Measured on W4 (8B full, 2xH200): micro 6 x 1 101.1 GiB and
        # micro 8 x 1 118.2 GiB, where gradients beside the activations would give 112.6 and 129.6.
        grads = max(0.0, grads - act) + 4 * nt / m.layers
    logits = 0.0 if _fused_loss(w) else \
        tokens * m.vocab * (LOGIT_BYTES_ZERO3 if w.strategy == "deepspeed-zero3" else LOGIT_BYTES)
    return Estimate(weights, grads, optim, act, logits)


def _block_activation_bytes(m: ModelShape, w: Workload) -> float:
    """Bytes autograd keeps per token for one block (bf16 unless said), SDPA/flash attention."""
    d, kv, i = m.hidden, m.kv_heads * m.head_dim, m.active_intermediate
    q = m.heads * m.head_dim
    ins = [a for n, (a, _) in m.linears().items() if w.lora_targets is None or n in w.lora_targets]
    dropout = w.adapter and w.lora_dropout > 0
    if _liger(w):  # norm in/out x2, roped q, k, v, attention output, gate, up, product; LoRA's r-dim outputs
        lora = 2 * w.lora_rank * len(m.linears()) if w.adapter else 0
        if not dropout:
            return 2 * (4 * d + 2 * q + 2 * kv + 3 * i) + lora
        # LoRA dropout: each adapted linear keeps its own dropped input (bf16) and mask (1 byte); the frozen base
        # keeps no input, so the norm outputs and the MLP product are no longer kept (measured on 70B QLoRA,
        # bench/results/w6q-memory-peak-2026-11-30.txt: 35.4 GiB of dropout copies at the peak)
        return 2 * (2 * d + 2 * q + 2 * kv + 2 * i) + 3 * sum(ins) + lora
    attn = 2 * (d + q + 2 * kv + q + kv + q + q) + 4 * d  # normed input, q k v, roped q k, attn out, o input; fp32 norm
    mlp = 2 * (d + 4 * i) + 4 * d
    lora = 0.0
    if w.adapter:  # peft's fp32 input copy per adapted linear + r-dim out; with dropout its fp32 output and mask
        lora = sum((9 if dropout else 4) * a + 4 * w.lora_rank for a in ins)
    return attn + mlp + lora


@dataclass
class Plan:
    """The planner's choice and its estimate."""

    strategy: str
    micro: int
    accumulation: int
    checkpointing: bool
    estimate: Estimate
    gpu_bytes: int
    notes: list[str] = field(default_factory=list)
    checkpoint_layers: int = 0  # blocks checkpointed (0 without checkpointing)
    layers: int = 0  # the model's blocks, to tell "all" from "k of them"

    @property
    def fsdp_reshard_after_forward(self) -> bool:
        return self.strategy != "fsdp-shard-grad-op"


class DoesNotFit(UserError):
    """No strategy, micro-batch and checkpointing setting fits the GPU memory."""


def choose(m: ModelShape, w: Workload, global_batch: int, *, candidates: list[str] | None = None,
           micro: int | None = None, accumulation: int | None = None, checkpointing: bool | None = None) -> Plan:
    """Pick strategy (among `candidates`, in order, if given), checkpointing (if None) and micro-batch (if None)
    that fit `w.gpu_bytes`.

    Raises:
        DoesNotFit: even micro-batch 1 with checkpointing and the most sharding considered does not fit.
    """
    budget = w.gpu_bytes * HEADROOM
    strategies = candidates or [w.strategy]
    per_rank = max(1, global_batch // w.world)
    micros = [micro] if micro else [2 ** k for k in range(int(math.log2(per_rank)), -1, -1)]
    ckpts = [checkpointing] if checkpointing is not None else [False, True]
    best = None
    for strat in strategies:
        ws = Workload(**{**w.__dict__, "strategy": strat})
        for ck in ckpts:
            for mb in micros:
                acc = accumulation or max(1, global_batch // (mb * w.world))
                e = estimate(m, ws, mb, ck, accumulation=acc)
                if best is None or e.total < best[0].total:
                    best = (e, strat, mb, ck)
                if e.total <= budget:
                    k = 0
                    if ck:
                        k = m.layers if checkpointing is True else _fewest_layers(m, ws, mb, budget, acc)
                        e = estimate(m, ws, mb, True, k, accumulation=acc)
                    return Plan(strat, mb, acc, ck, e, w.gpu_bytes, checkpoint_layers=k, layers=m.layers)
    e, strat, mb, ck = best
    raise DoesNotFit(
        f"the memory plan does not fit: {strat}, micro-batch {mb}, checkpointing {'on' if ck else 'off'} needs "
        f"{e.total / GiB:.1f} GiB per GPU (weights {e.weights / GiB:.1f}, gradients {e.gradients / GiB:.1f}, "
        f"optimizer {e.optimizer / GiB:.1f}, activations {e.activations / GiB:.1f}, logits {e.logits / GiB:.1f}) "
        f"of {w.gpu_bytes / GiB:.0f} GiB; use more GPUs, spec.distributed.strategy fsdp/deepspeed-zero3 with "
        "cpuOffload, method qlora, or a shorter spec.dataset.maxLength")


def _fewest_layers(m: ModelShape, w: Workload, micro: int, budget: float, accumulation: int = 1) -> int:
    """The fewest checkpointed blocks with which `micro` fits `budget` (all of them fit: the caller checked)."""
    lo, hi = 1, m.layers
    while lo < hi:  # the estimate falls as k grows
        mid = (lo + hi) // 2
        if estimate(m, w, micro, True, mid, accumulation=accumulation).total <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def merge_host_bytes(m: ModelShape) -> int:
    """Host memory the CPU merge of an adapter needs: the bf16 base once, plus a shard being written."""
    return int(m.params * 2 * 1.1 + 2 * GiB)


def parse_bytes(text: str) -> int:
    """'141GiB', '80GB', '80G', '1.5TiB', a Kubernetes quantity ('50Gi', '500M'), or a number of bytes."""
    t = text.strip()
    units = {"pib": 1024 ** 5, "tib": 1024 ** 4, "gib": GiB, "mib": 1024 ** 2, "kib": 1024, "pb": 10 ** 15,
             "tb": 10 ** 12, "gb": 10 ** 9, "mb": 10 ** 6, "kb": 10 ** 3, "pi": 1024 ** 5, "ti": 1024 ** 4,
             "gi": GiB, "mi": 1024 ** 2, "ki": 1024, "p": 10 ** 15, "t": 10 ** 12, "g": 10 ** 9, "m": 10 ** 6,
             "k": 10 ** 3}
    for u in sorted(units, key=len, reverse=True):
        if t.lower().endswith(u):
            return int(float(t[: -len(u)]) * units[u])
    return int(float(t))
