"""Cross-field rules of the FineTuneJob spec, in one place, in two languages.

Each rule is written once as a CEL expression (the API server enforces it through the CRD's
`x-kubernetes-validations`, so `kubectl apply` refuses a bad job) and once as a Python predicate (pydantic
enforces it for `finetune validate/run` and in the operator). The two are side by side so they cannot
drift unnoticed; tests/unit/test_rules.py checks both against the same good and bad specs, and the cluster
tier checks the API server refuses the bad ones.

CEL sees the object as stored: optional fields may be absent, hence the `has()` guards; Python sees the
parsed model with defaults filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Any, Callable


@dataclass(frozen=True)
class Rule:
    """One cross-field rule.

    Attributes:
        on: dotted path of the object the rule is attached to (`spec`, `spec.model`, ...).
        field: the field the error is reported on, relative to `on` (used as CEL `fieldPath`).
        cel: the rule in CEL, `self` being the object at `on`.
        message: what a person reads when the rule fails; names the field and the fix.
        check: the same rule in Python, given the parsed model at `on`; True when the object is valid.
    """

    on: str
    field: str
    cel: str
    message: str
    check: Callable[[Any], bool]


def _gpus_may_be_present(dist: Any) -> bool:
    return dist.gpus_per_node != 0


_DOTDOT = "(^|/)[.][.](/|$)"  # a ".." component (RE2, CEL and Python read it alike)


def _inside(path: Any) -> bool:
    """A path that stays inside the folder it is relative to: no '..' component, not absolute for subPath."""
    return path is None or re.search(_DOTDOT, path) is None


def _sub_path_rule(on: str) -> Rule:
    return Rule(
        on, "subPath", f"!has(self.subPath) || (!self.subPath.startsWith('/') && !self.subPath.matches('{_DOTDOT}'))",
        f"{on}.subPath must be a relative path inside the volume (no leading '/', no '..')",
        lambda v: v.sub_path is None or (not v.sub_path.startswith("/") and _inside(v.sub_path)),
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "spec.model", "path", "has(self.path) != has(self.hubId)",
        "set exactly one of spec.model.path and spec.model.hubId",
        lambda m: (m.path is None) != (m.hub_id is None),
    ),
    Rule(
        "spec.dataset", "paths", "has(self.paths) != has(self.hubId)",
        "set exactly one of spec.dataset.paths and spec.dataset.hubId",
        lambda d: (d.paths is None) != (d.hub_id is None),
    ),
    Rule(
        "spec.dataset", "validationPaths", "!(has(self.validationSplit) && has(self.validationPaths))",
        "set at most one of spec.dataset.validationSplit and spec.dataset.validationPaths",
        lambda d: not (d.validation_split is not None and d.validation_paths is not None),
    ),
    Rule(
        "spec.training", "maxSteps", "!(has(self.epochs) && has(self.maxSteps))",
        "set at most one of spec.training.epochs and spec.training.maxSteps",
        lambda t: not (t.epochs is not None and t.max_steps is not None),
    ),
    Rule(
        "spec.method", "lora", "!has(self.lora) || !has(self.type) || self.type in ['lora', 'qlora']",
        "spec.method.lora applies only to method type lora or qlora",
        lambda m: m.lora is None or m.is_adapter,
    ),
    Rule(
        "spec.method", "spectrum", "!has(self.spectrum) || (has(self.type) && self.type == 'spectrum')",
        "spec.method.spectrum applies only to method type spectrum",
        lambda m: m.spectrum is None or m.type == "spectrum",
    ),
    Rule(
        "spec.training", "microBatchSize",
        "!has(self.microBatchSize) || type(self.microBatchSize) != int || (has(self.gradientAccumulation) "
        "&& type(self.gradientAccumulation) == int) || self.microBatchSize <= "
        "(has(self.globalBatchSize) ? self.globalBatchSize : 16)",
        "spec.training.microBatchSize is larger than spec.training.globalBatchSize (default 16): with "
        "gradientAccumulation auto a step holds globalBatchSize examples; raise globalBatchSize or lower microBatchSize",
        lambda t: t.micro_batch_size == "auto" or t.gradient_accumulation != "auto"
        or t.micro_batch_size <= t.global_batch_size,
    ),
    _sub_path_rule("spec.model.volume"),
    _sub_path_rule("spec.dataset.volume"),
    Rule(
        "spec.output", "path", f"!has(self.volume) || !self.path.matches('{_DOTDOT}')",
        "spec.output.path must stay inside spec.output.volume: no '..' component (results outside the volume are "
        "lost with the pod)",
        lambda o: o.volume is None or _inside(o.path),
    ),
    Rule(
        "spec.scheduling.tolerations[]", "value",
        "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
        "spec.scheduling.tolerations[].value must be empty when operator is Exists (Exists matches any value)",
        lambda t: t.operator != "Exists" or not t.value,
    ),
    Rule(
        "spec.scheduling.tolerations[]", "key",
        "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
        "spec.scheduling.tolerations[].key is empty, which needs operator Exists (tolerate every taint)",
        lambda t: bool(t.key) or t.operator == "Exists",
    ),
    Rule(
        "spec.scheduling.tolerations[]", "tolerationSeconds",
        "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "spec.scheduling.tolerations[].tolerationSeconds needs effect NoExecute",
        lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
    ),
    Rule(
        "spec.output.volume", "claimName", "has(self.claimName) != has(self.create)",
        "set exactly one of spec.output.volume.claimName and spec.output.volume.create",
        lambda v: (v.claim_name is None) != (v.create is None),
    ),
    Rule(
        "spec.distributed", "cpuOffload",
        "!has(self.cpuOffload) || !self.cpuOffload || !has(self.strategy) || self.strategy != 'ddp'",
        "spec.distributed.cpuOffload needs a sharded strategy (fsdp, deepspeed-zero2, deepspeed-zero3 or auto), not ddp",
        lambda d: not d.cpu_offload or d.strategy != "ddp",
    ),
    Rule(
        "spec.distributed", "strategy",
        "!has(self.strategy) || !self.strategy.startsWith('deepspeed') || !has(self.gpusPerNode) || self.gpusPerNode != 0",
        "spec.distributed.strategy deepspeed-* needs GPUs; gpusPerNode is 0",
        lambda d: not d.strategy.startswith("deepspeed") or _gpus_may_be_present(d),
    ),
    Rule(
        "spec", "method.type",
        "!has(self.method) || !has(self.method.type) || self.method.type != 'qlora' || !has(self.distributed) "
        "|| !has(self.distributed.gpusPerNode) || self.distributed.gpusPerNode != 0",
        "spec.method.type qlora quantises the base to 4-bit with bitsandbytes and needs a GPU; "
        "spec.distributed.gpusPerNode is 0",
        lambda s: s.method.type != "qlora" or _gpus_may_be_present(s.distributed),
    ),
    Rule(
        "spec", "objective.type",
        "!has(self.objective) || !has(self.objective.type) || !(self.objective.type in ['dpo', 'orpo']) "
        "|| self.dataset.format == 'preference'",
        "spec.objective.type dpo/orpo trains on preference data: set spec.dataset.format to preference",
        lambda s: not s.objective.is_preference or s.dataset.format == "preference",
    ),
    Rule(
        "spec", "dataset.format",
        "self.dataset.format != 'preference' || (has(self.objective) && has(self.objective.type) "
        "&& self.objective.type in ['dpo', 'orpo'])",
        "spec.dataset.format preference needs spec.objective.type dpo or orpo",
        lambda s: s.dataset.format != "preference" or s.objective.is_preference,
    ),
    Rule(
        "spec", "dataset.packing",
        "!has(self.dataset.packing) || !self.dataset.packing || self.dataset.format != 'preference'",
        "spec.dataset.packing does not apply to preference data (chosen and rejected must stay paired)",
        lambda s: not s.dataset.packing or s.dataset.format != "preference",
    ),
    Rule(
        "spec.serving", "gate", "!has(self.gate) || has(self.gate.maxEvalLoss) || has(self.gate.minExactMatch)",
        "spec.serving.gate sets no threshold: give maxEvalLoss, minExactMatch or both (or remove the gate)",
        lambda sv: sv.gate is None or sv.gate.max_eval_loss is not None or sv.gate.min_exact_match is not None,
    ),
    Rule(
        "spec", "serving.gate",
        "!has(self.serving) || !has(self.serving.gate) || has(self.dataset.validationSplit) "
        "|| has(self.dataset.validationPaths)",
        "spec.serving.gate judges the end-of-run evaluation on held-out data: set spec.dataset.validationSplit "
        "or spec.dataset.validationPaths",
        lambda s: s.serving.gate is None or s.dataset.validation_split is not None
        or s.dataset.validation_paths is not None,
    ),
    Rule(
        "spec", "serving.gate.minExactMatch",
        "!has(self.serving) || !has(self.serving.gate) || !has(self.serving.gate.minExactMatch) "
        "|| !has(self.objective) || !has(self.objective.type) || self.objective.type in ['sft', 'cpt']",
        "spec.serving.gate.minExactMatch needs objective sft or cpt (dpo and orpo report preference accuracy, "
        "not exact match); use maxEvalLoss",
        lambda s: s.serving.gate is None or s.serving.gate.min_exact_match is None
        or s.objective.type in ("sft", "cpt"),
    ),
    Rule(
        "spec", "output.mergeAdapter",
        "!has(self.output.mergeAdapter) || !self.output.mergeAdapter || !has(self.method) "
        "|| !has(self.method.type) || self.method.type in ['lora', 'qlora']",
        "spec.output.mergeAdapter needs an adapter: method type lora or qlora",
        lambda s: not s.output.merge_adapter or s.method.is_adapter,
    ),
)

# Fields of spec that may change after creation; every other top-level field is immutable.
MUTABLE_SPEC_FIELDS: frozenset[str] = frozenset({"suspend"})


def immutability_rule(field: str) -> dict:
    """The CEL transition rule that refuses any change of `spec.<field>` after creation."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"spec.{field} is immutable after creation (only spec.suspend may change); "
        "delete the FineTuneJob and create a new one",
        "fieldPath": f".{field}",
    }


def rules_on(path: str) -> list[Rule]:
    """The rules attached to the object at `path`."""
    return [r for r in RULES if r.on == path]


def _objects_at(spec: Any, on: str) -> list[tuple[str, Any]]:
    """(concrete path, object) for every object a rule attached at `on` applies to (absent ones skipped)."""
    found = [("spec", spec)]
    for part in on.split(".")[1:]:
        many = part.endswith("[]")
        name = part[:-2] if many else part
        step = []
        for path, obj in found:
            field = next((n for n, f in type(obj).model_fields.items() if (f.alias or n) == name), name)
            value = getattr(obj, field, None)
            if value is None:
                continue
            step += [(f"{path}.{name}[{i}]", v) for i, v in enumerate(value)] if many else [(f"{path}.{name}", value)]
        found = step
    return found


def all_violations(spec: Any) -> list[tuple[str, str]]:
    """(field path, message) for every rule the parsed `spec` breaks, in RULES order."""
    out: list[tuple[str, str]] = []
    for on in dict.fromkeys(r.on for r in RULES):
        for path, obj in _objects_at(spec, on):
            out += violations(obj, path, on=on)
    return out


def violations(obj: Any, path: str, on: str | None = None) -> list[tuple[str, str]]:
    """(field path, message) for every rule attached at `on` (default `path`) that `obj`, found at `path`, breaks.

    `on` differs from `path` for list items: rules attach to `spec.scheduling.tolerations[]`, and a broken
    one is reported at `spec.scheduling.tolerations[2]`.
    """
    return [(f"{path}.{r.field}", r.message) for r in rules_on(on or path) if not r.check(obj)]
