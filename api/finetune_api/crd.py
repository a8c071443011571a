"""The CustomResourceDefinition, generated from the pydantic models (never written by hand).

pydantic's JSON schema is close to what the API server wants, but not equal: the API server needs a
*structural* schema (every node typed, no `$ref`, no `anyOf` with types, no `title`), expresses
"'auto' or a number" as `x-kubernetes-int-or-string` and open objects as `x-kubernetes-preserve-unknown-fields`. Two unions have no
structural type ('auto' or a boolean; 'all-linear' or a list): CEL cannot see untyped fields, so they get value
validations the API server applies by JSON type (a string pattern: booleans pass; a pattern + minItems).
This module does that translation, attaches the CEL rules from rules.py where they belong, adds the
immutability rules, printer columns, short name and status subresource.

What `kubectl explain` can show is limited by what it reads: it prints a field's `type` (an untyped union is
`<Object>`) and its description, never a schema `default`. So every description here ends with the field's
default and every union's description starts with the types it takes. Two schema defaults exist, both for what
`kubectl get` shows without an operator: `spec.method.type` (the METHOD column) and `status` (a job no operator has
seen yet reads PHASE Pending, with a message saying what to check). `python -m finetune_api.crd`
writes crds/finetunejobs.finetune.io.yaml (and the chart's copy); tests/unit/api/test_crd.py fails when the checked-in file is stale.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .job import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, FineTuneJob
from .rules import MUTABLE_SPEC_FIELDS, RULES, immutability_rule

CRD_FILE = f"{PLURAL}.{GROUP}.yaml"

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent", "description": "Steps done."},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss", "description": "Latest train loss."},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta", "description": "Time to the end of training."},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step", "priority": 1,
     "description": "Optimizer steps done."},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts", "priority": 1,
     "description": "Times the trainer pods were restarted (each resumes from the newest checkpoint)."},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method.type", "priority": 1},
    # exactly one of the two is set (a CEL rule), so the union prints one value
    {"name": "Model", "type": "string", "jsonPath": ".spec.model['hubId','path']", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# CEL rules report this reason, so the API server prints "field: Forbidden: <message>" instead of "field: Invalid
# value: "object": <message>" (it cannot print an object's or an int-or-string's value, and printed a type or "").
FORBIDDEN = "FieldValueForbidden"

# metadata.name names the trainer pods' hostnames and the rendezvous Service: refused at admission when it cannot
# (a custom resource's name may otherwise be a 253-character DNS subdomain, dots included).
NAME_RULE = {
    "rule": "self.size() <= 63 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
    "reason": "FieldValueForbidden",
    "messageExpression": "'metadata.name ' + self + ' is not a DNS label (at most 63 characters: lowercase letters, "
                         "digits and -, starting and ending with a letter or digit, no dots): it names the trainer "
                         "pods and their Service'",
}

# What a FineTuneJob's status reads until an operator writes one (a schema default, applied on every read).
NO_OPERATOR_STATUS = {
    "phase": "Pending",
    "message": "No finetune-operator has reconciled this job yet. Is the operator installed and running? "
               "(helm install finetune-operator charts/finetune-operator -n finetune-system --create-namespace; "
               "kubectl -n finetune-system get pods)",
}


def _resolve(node: Any, defs: dict) -> Any:
    """Inline every `$ref` to `#/$defs/...`."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _resolve({**target, **rest}, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _with_default(node: dict, default: Any) -> dict:
    """Append "Default: `x`." to the description (kubectl explain never prints a schema default)."""
    if default in (None, "") or isinstance(default, (dict, list)) or not node.get("description"):
        return node
    text = json.dumps(default) if not isinstance(default, str) else default
    return {**node, "description": f"{node['description'].rstrip()} Default: `{text}`."}


def _structural(node: dict) -> dict:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    return _with_default(_structural_node(node), node.get("default"))


def _structural_node(node: dict) -> dict:
    node = {k: v for k, v in node.items() if k not in ("title", "default")}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        types = {b.get("type") for b in branches}
        desc = node.get("description")
        if len(branches) == 1:
            node = {**_structural(branches[0]), **node}
        elif types == {"integer", "string"}:  # 'auto' or a number
            ints = [b for b in branches if b.get("type") == "integer"][0]
            lo = ints["minimum"] if "minimum" in ints else ints.get("exclusiveMinimum", -(2**31) - 1) + 1
            node = {**node, "x-kubernetes-int-or-string": True, "x-kubernetes-validations": [{
                "rule": f"type(self) == int ? self >= {lo} : self == 'auto'",
                "messageExpression": f"'must be auto or an integer >= {lo} (unquoted), not ' + "
                                     "(type(self) == string ? \"'\" + self + \"'\" : string(self))",
                "reason": FORBIDDEN,
            }]}
            desc = f"An integer >= {lo}, or `auto`. {desc or ''}".rstrip()
        elif types == {"boolean", "string"}:  # 'auto' or true/false: no CEL can see an untyped field,
            # but an enum of mixed JSON types is a value validation the API server applies
            # A pattern applies to strings only, so booleans pass and the only string is `auto`; a quoted 'true' is
            # refused, as `finetune validate` refuses it. (An enum of mixed types refused 'true' with "supported
            # values: "auto", "true", "false"", which reads as if 'true' were allowed.)
            consts = [b["enum"][0] if "enum" in b else b.get("const") for b in branches if b.get("type") == "string"]
            node = {**node, "x-kubernetes-preserve-unknown-fields": True, "pattern": f"^({'|'.join(consts)})$"}
            desc = f"{' or '.join(f'`{c}`' for c in consts)}, true or false. {desc or ''}".rstrip()
        elif types == {"array", "string"}:  # 'all-linear' or a list of names: the pattern applies to strings
            # only and minItems to arrays only, so together they refuse other strings and the empty list
            consts = [b["enum"][0] if "enum" in b else b.get("const") for b in branches if b.get("type") == "string"]
            node = {**node, "x-kubernetes-preserve-unknown-fields": True, "pattern": f"^({'|'.join(consts)})$",
                    "minItems": 1}
            desc = f"{' or '.join(f'`{c}`' for c in consts)}, or a list of strings. {desc or ''}".rstrip()
        else:
            raise ValueError(f"no structural form for anyOf {branches}")
        if desc:
            node["description"] = desc
        return node
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, strict in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(strict), (int, float)) and not isinstance(node.get(strict), bool):
            node[bound] = node.pop(strict)  # OpenAPI v3.0: the bound is a number, "exclusive" a flag
            node[strict] = True
    t = node.get("type")
    if t == "object" and "patternProperties" in node:  # a map with checked keys (labels): no such structural form
        (key_pattern, value), = node.pop("patternProperties").items()
        names = node.pop("propertyNames", {})
        node["additionalProperties"] = value
        cel_pattern = key_pattern.replace("\\", "\\\\")  # inside a CEL string literal
        size = f" && size(k) <= {names['maxLength']}" if "maxLength" in names else ""
        node.setdefault("x-kubernetes-validations", []).append({
            "rule": f"self.all(k, k.matches('{cel_pattern}'){size})",
            "message": "keys must be label keys: an optional DNS-subdomain prefix and '/', then letters, digits, "
                       "'-', '_' or '.', starting and ending with a letter or digit"})
    if t == "object":
        props = node.get("properties")
        if props is not None:
            node["properties"] = {k: _structural(v) for k, v in props.items()}
            node.pop("additionalProperties", None)
        elif isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"]:
            node["additionalProperties"] = _structural(node["additionalProperties"])
        else:  # free-form object (affinity, tolerations[i]): kept as the user wrote it
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
    elif t == "array":
        node["items"] = _structural(node.get("items", {"type": "object"}))
    return node


def _at(schema: dict, dotted: str) -> dict:
    node = schema
    for part in dotted.split(".")[1:]:
        if part.endswith("[]"):  # the items of a list (rules on each toleration)
            node = node["properties"][part[:-2]]["items"]
        else:
            node = node["properties"][part]
    return node


def _attach_rules(spec_schema: dict) -> None:
    root = {"properties": {"spec": spec_schema}}
    for r in RULES:
        node = _at(root, "x." + r.on)
        rule: dict = {"rule": r.cel, "message": r.message, "reason": FORBIDDEN}
        if r.field:
            rule["fieldPath"] = f".{r.field}"
        node.setdefault("x-kubernetes-validations", []).append(rule)
    for field in spec_schema["properties"]:
        if field not in MUTABLE_SPEC_FIELDS:
            spec_schema.setdefault("x-kubernetes-validations", []).append(immutability_rule(field) | {"reason": FORBIDDEN})


def _model_schema(cls) -> dict:
    raw = cls.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def openapi_schema() -> dict:
    """The CRD's `openAPIV3Schema`: apiVersion, kind, metadata, spec (with CEL rules) and status."""
    full = _model_schema(FineTuneJob)
    spec = full["properties"]["spec"]
    _attach_rules(spec)
    method = spec["properties"]["method"]
    method["default"] = {}  # so that the METHOD column shows the default method (a nested default needs a parent)
    method["properties"]["type"]["default"] = "lora"
    status = full["properties"]["status"] | {"default": NO_OPERATOR_STATUS}
    return {
        "type": "object",
        "description": FineTuneJob.__doc__.strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "finetune.io/v1alpha1"},
            "kind": {"type": "string", "description": "FineTuneJob"},
            "metadata": {"type": "object", "properties": {"name": {"type": "string",
                                                                   "x-kubernetes-validations": [NAME_RULE]}}},
            "spec": spec,
            "status": status,
        },
    }


def build_crd() -> dict:
    """The complete CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "finetune-operator", "app.kubernetes.io/part-of": "finetune-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES), "categories": ["all", "finetune"],
            },
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as the YAML text that is checked in (stable key order, generated-file header)."""
    header = "# Generated by `python -m finetune_api.crd` from the pydantic models in api/finetune_api. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    """Write the CRD into the directories given (default: crds/ and the Helm chart's crds/)."""
    argv = sys.argv[1:] if argv is None else argv
    repo = Path(__file__).resolve().parents[2]
    out_dirs = [Path(a) for a in argv] or [repo / "crds", repo / "charts" / "finetune-operator" / "crds"]
    text = render_crd_yaml()
    for out_dir in out_dirs:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / CRD_FILE
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
