"""How to serve a run's output: a ready vLLM command and a KServe InferenceService, from the paths the run wrote.

Why: the output folder is the end of training but not of the user's loop; the next step is a server, and the
commands for it depend on what was trained (an adapter on a base, a merged model, full weights), where the base
comes from (hub id and revision, or a folder) and where the output lies (a local folder, or a claim mounted in
the trainer pod). Written by hand, those commands drift from the paths; built here from the same config the run
used, they go into manifest.json (`serving`) and `finetune render --serving`, and a test serves-checks them
against a real output (every path named exists; the adapter's base is the base served).

The KServe manifest mounts the model and output claims exactly where the trainer pod had them (`/mnt/model`,
`/mnt/output`), so the paths inside the run's own manifest stay true in the server, and it uses KServe's
Hugging Face runtime (vLLM backend), which passes vLLM's own flags through. Pure: no I/O, no torch.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any, Optional

from finetune_api.serving import gate_verdict
from finetune_api.trainer_config import TrainerConfig

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
KSERVE_API = "serving.kserve.io/v1beta1"


def output_claim(cfg: TrainerConfig) -> Optional[str]:
    """The PersistentVolumeClaim holding the output: the named one, or the one the operator creates
    (`<job>-output`, operator/finetune_operator/names.output_pvc_name; a test holds the two equal)."""
    vol = cfg.job.spec.output.volume
    if vol is None:
        return None
    return vol.claim_name or f"{cfg.job.metadata.name}-output"


def _mount_root(full: str, rel: str) -> str:
    """Where the volume holding `full` is mounted, given the spec's path `rel` inside it."""
    rel = posixpath.normpath(rel.lstrip("/"))
    if rel in (".", ""):
        return full
    return full[: -len(rel) - 1] if full.endswith("/" + rel) else posixpath.dirname(full)


def _vllm(model: str, name: str, revision: Optional[str], adapter: Optional[str], rank: int) -> dict[str, Any]:
    argv = ["vllm", "serve", model]
    if revision and revision != "main":
        argv += ["--revision", revision]
    if adapter is not None:
        max_rank = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)
        argv += ["--enable-lora", "--lora-modules", f"{name}={adapter}", "--max-lora-rank", str(max_rank)]
    else:
        argv += ["--served-model-name", name]
    return {"argv": argv, "command": shlex.join(argv)}


def _kserve(cfg: TrainerConfig, base: str, name: str, adapter: Optional[str], rank: int) -> Optional[dict]:
    """The InferenceService serving the output from its claims, or None for a local output (no claim)."""
    spec, claim = cfg.job.spec, output_claim(cfg)
    if claim is None:
        return None
    out_root = _mount_root(cfg.output_dir, spec.output.path)
    volumes = {claim: {"name": "output", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}}
    mounts = [{"name": "output", "mountPath": out_root, "readOnly": True}]
    args = [f"--model_name={name}"]
    if spec.model.hub_id and adapter is not None:
        args.append(f"--model_id={spec.model.hub_id}")
        if spec.model.revision != "main":
            args.append(f"--model_revision={spec.model.revision}")
    else:
        args.append(f"--model_dir={base}")
        if spec.model.volume is not None and base == cfg.model_path:
            mclaim = spec.model.volume.claim_name
            vol = volumes.setdefault(mclaim, {"name": "model", "persistentVolumeClaim": {"claimName": mclaim,
                                                                                        "readOnly": True}})
            mount = {"name": vol["name"], "mountPath": _mount_root(cfg.model_path, spec.model.path or ""),
                     "readOnly": True}
            if spec.model.volume.sub_path:
                mount["subPath"] = spec.model.volume.sub_path
            mounts.append(mount)
    if adapter is not None:
        args += ["--enable-lora", "--lora-modules", f"{name}={adapter}",
                 "--max-lora-rank", str(next((r for r in VLLM_LORA_RANKS if r >= rank), rank))]
    # one GPU: what serving the models of this field takes up to ~30B in bf16; larger ones add vLLM's
    # --tensor-parallel-size N and as many GPUs (docs/user-guide.md, Serving)
    model: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"}, "args": args,
        "resources": {"limits": {spec.resources.gpu_resource_name: "1"}}, "volumeMounts": mounts}
    if spec.hf_token_secret_ref is not None:  # gated base: the token by reference, never by value
        ref = spec.hf_token_secret_ref
        model["env"] = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]
    return {"apiVersion": KSERVE_API, "kind": "InferenceService",
            "metadata": {"name": name, "namespace": cfg.job.metadata.namespace or "default",
                         "labels": {"finetune.io/job-name": cfg.job.metadata.name}},
            "spec": {"predictor": {"model": model, "volumes": list(volumes.values())}}}


def handoff(cfg: TrainerConfig, metrics: Optional[dict] = None) -> dict[str, Any]:
    """The manifest's `serving` section for the output of `cfg` (paths as the run wrote them).

    Args:
        cfg: the run's config (the job, the resolved model path and output directory).
        metrics: the run's summary (final_eval_loss, eval_exact_match), for the ReadyToServe verdict.

    Returns:
        {name, kind (adapter | full), base_model, adapter_path, merged_path, model_path, vllm{argv, command},
        vllm_merged, kserve (an InferenceService, None for a local output), notes, ready_to_serve{status, reason,
        message}}.
    """
    spec, name, out = cfg.job.spec, cfg.job.metadata.name, cfg.output_dir
    base = cfg.model_path or spec.model.hub_id
    revision = spec.model.revision if cfg.model_path is None else None
    rank = spec.lora.rank
    merged = posixpath.join(out, "merged") if spec.method.is_adapter and spec.output.merge_adapter else None
    doc: dict[str, Any] = {"name": name, "kind": "adapter" if spec.method.is_adapter else "full", "base_model": base}
    notes: list[str] = []
    if spec.method.is_adapter:
        doc |= {"adapter_path": out, "merged_path": merged, "model_path": merged,
                "vllm": _vllm(base, name, revision, out, rank),
                "vllm_merged": _vllm(merged, name, None, None, rank) if merged else None,
                # the merged model when there is one (asked for, exact, no adapter overhead), else base + adapter
                "kserve": _kserve(cfg, merged, name, None, rank) if merged else _kserve(cfg, base, name, out, rank)}
        if spec.method.type == "qlora":
            notes.append("trained on the 4-bit (NF4) base; vLLM serves the adapter on the bf16 base, which can "
                         "differ slightly: serve the merged model (spec.output.mergeAdapter) for the exact result")
    else:
        doc |= {"adapter_path": None, "merged_path": None, "model_path": out,
                "vllm": _vllm(out, name, None, None, rank), "vllm_merged": None,
                "kserve": _kserve(cfg, out, name, None, rank)}
    if doc["kserve"] is not None and cfg.model_path and spec.model.volume is None and doc["kind"] == "adapter" \
            and not merged:
        notes.append(f"the base {cfg.model_path} is a folder inside the trainer image: make it reachable to the "
                     "server (a claim, or spec.model.hubId)")
    doc["notes"] = notes
    m = metrics or {}
    v = gate_verdict(spec.serving.gate, m.get("final_eval_loss"), m.get("eval_exact_match"))
    doc["ready_to_serve"] = {"status": v.status, "reason": v.reason, "message": v.message}
    return doc
