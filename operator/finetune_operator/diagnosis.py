"""Why the trainer pods are not running: each cause with its own reason and a message naming what is missing.

Why a module of its own: "0/1 trainer pods running" is true for a missing PriorityClass, a missing Secret, an image
that cannot be pulled, a missing PersistentVolumeClaim and a full cluster alike, and each needs a different fix.
The Job controller says it in a FailedCreate event (the pods cannot even be created), the kubelet in the container's
waiting state, the scheduler in the PodScheduled condition; this module reads all three and names the object and
the spec field behind it. Pure: the reconciler gathers the inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from . import names
from .failure_policy import index_of, is_active

_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
_START = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
          "PreCreateHookError", "PostStartHookError"}


@dataclass(frozen=True)
class Refs:
    """The objects a FineTuneJob's pods depend on, by name, with the spec field that names each."""

    namespace: str
    claims: dict[str, str] = field(default_factory=dict)  # claim name -> spec field
    secrets: dict[str, str] = field(default_factory=dict)  # Secret name -> spec field
    priority_class: Optional[str] = None
    # read by the reconciler only while a pod waits on a claim (the scheduler names one cause, not always the
    # missing claim): which of `claims` do not exist, which exist unbound
    missing_claims: tuple[str, ...] = ()
    unbound_claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """A cause, reported as condition `condition` = False with `reason` and `message`."""

    condition: str  # Scheduled (the pods cannot be created or placed) or Running (they cannot start)
    reason: str
    message: str


def refs_of(spec: dict, namespace: str, output_claim: str) -> Refs:
    """The Refs of a FineTuneJob's stored spec (no defaults needed: absent fields reference nothing)."""
    claims = {}
    for part in ("model", "dataset"):
        claim = ((spec.get(part) or {}).get("volume") or {}).get("claimName")
        if claim:
            claims.setdefault(claim, f"spec.{part}.volume.claimName")
    out = ((spec.get("output") or {}).get("volume") or {})
    if out.get("claimName"):
        claims.setdefault(out["claimName"], "spec.output.volume.claimName")
    elif out.get("create"):
        claims.setdefault(output_claim, "spec.output.volume.create (the operator's claim)")
    secret = spec.get("hfTokenSecretRef") or {}
    secrets = {secret["name"]: "spec.hfTokenSecretRef.name"} if secret.get("name") else {}
    return Refs(namespace, claims, secrets, (spec.get("scheduling") or {}).get("priorityClassName"))


def failed_create(message: str, refs: Refs) -> Problem:
    """The Job controller's FailedCreate event: the pods cannot be created at all."""
    text = f"the Job controller cannot create the trainer pods: {message.strip()}"
    m = re.search(r'no PriorityClass with name (\S+) was found', message)
    if m:
        return Problem("Scheduled", "PriorityClassNotFound",
                       f"PriorityClass {m.group(1)} (spec.scheduling.priorityClassName) does not exist: create it "
                       f"(kubectl create priorityclass {m.group(1)} --value=1000) or remove the field; {text}")
    if "exceeded quota" in message:
        return Problem("Scheduled", "QuotaExceeded", f"namespace {refs.namespace} has no quota left for the trainer "
                       f"pods: free some, raise the ResourceQuota or lower spec.resources; {text}")
    if "violates PodSecurity" in message:
        return Problem("Scheduled", "PodSecurityViolation", f"namespace {refs.namespace}'s Pod Security level refuses "
                       f"the trainer pods; {text}")
    return Problem("Scheduled", "PodCreateFailed", text)


def _container(pod: dict, key: str) -> dict:
    for c in (pod.get(key) or {}).get("containerStatuses" if key == "status" else "containers") or []:
        if c.get("name") == names.TRAINER_CONTAINER:
            return c
    return {}


def waiting(pods: list[dict], refs: Refs) -> Optional[Problem]:
    """A trainer container the kubelet cannot start (image, Secret, ConfigMap, crash loop), or None."""
    for pod in sorted((p for p in pods if is_active(p)), key=index_of):
        status = _container(pod, "status")
        state = (status.get("state") or {}).get("waiting") or {}
        reason, msg = state.get("reason") or "", (state.get("message") or "").strip()
        name = pod["metadata"]["name"]
        if reason in _PULL:
            image = _container(pod, "spec").get("image") or status.get("image") or "?"
            return Problem("Running", reason, f"pod {name} cannot pull image {image}: {msg or reason}. Check "
                           f"spec.image (or the operator's trainer image) and the registry's pull credentials.")
        if reason not in _START:
            continue
        m = re.search(r'secret "([^"]+)" not found', msg)
        if m:
            field_name = refs.secrets.get(m.group(1), "a secretKeyRef")
            return Problem("Running", "SecretNotFound",
                           f'Secret "{m.group(1)}" ({field_name}) not found in namespace {refs.namespace}: create it '
                           f"(kubectl -n {refs.namespace} create secret generic {m.group(1)} "
                           f"--from-literal=token=<your Hugging Face token>); pod {name}: {msg}")
        m = re.search(r"couldn't find key (\S+) in Secret \S+?/(\S+)", msg)
        if m:
            return Problem("Running", "SecretKeyNotFound",
                           f'Secret "{m.group(2)}" has no key "{m.group(1)}" (spec.hfTokenSecretRef.key); pod {name}: {msg}')
        m = re.search(r'configmap "([^"]+)" not found', msg)
        if m:
            return Problem("Running", "ConfigMapNotFound", f'ConfigMap "{m.group(1)}" not found (the operator '
                           f"recreates its own on the next resync); pod {name}: {msg}")
        if reason == "CrashLoopBackOff":
            last = ((status.get("lastState") or {}).get("terminated") or {})
            return Problem("Running", reason, f"pod {name}: the trainer keeps exiting (last exit code "
                           f"{last.get('exitCode', '?')}, {last.get('reason', 'Error')}): {msg}")
        return Problem("Running", reason, f"pod {name}: {msg or reason}")
    return None


def _requests(pod: dict) -> str:
    req = (_container(pod, "spec").get("resources") or {}).get("requests") or {}
    return ", ".join(f"{v} {k}" for k, v in sorted(req.items(), key=lambda kv: "/" not in kv[0])) or "its requests"


def unschedulable(pods: list[dict], refs: Refs) -> Optional[Problem]:
    """A pod the scheduler cannot place: a missing or unbound claim, or capacity; None when all are placed."""
    for pod in sorted((p for p in pods if is_active(p)), key=index_of):
        for c in (pod.get("status") or {}).get("conditions") or []:
            if not (c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"):
                continue
            msg, name = (c.get("message") or "").strip(), pod["metadata"]["name"]
            m = re.search(r'persistentvolumeclaim "([^"]+)" not found', msg)
            missing = m.group(1) if m else (refs.missing_claims[0] if refs.missing_claims and waits_on_claims(msg)
                                            else None)
            if missing:
                where = refs.claims.get(missing, "a volume of the pod")
                return Problem("Scheduled", "PersistentVolumeClaimNotFound",
                               f'PersistentVolumeClaim "{missing}" ({where}) not found in namespace '
                               f"{refs.namespace}: create it or fix the claim name (no node capacity is missing); "
                               f"pod {name}: {msg}")
            if "unbound" in msg and "PersistentVolumeClaim" in msg:
                claims = ", ".join(sorted(refs.unbound_claims or refs.claims)) or "of the pod"
                return Problem("Scheduled", "PersistentVolumeClaimNotBound",
                               f"the PersistentVolumeClaims ({claims}) are not all bound to a volume: see kubectl -n "
                               f"{refs.namespace} get pvc (a StorageClass that provisions them, or a matching "
                               f"PersistentVolume); pod {name}: {msg}")
            return Problem("Scheduled", "Unschedulable",
                           f"pod {name} waits for a node with {_requests(pod)} free: {msg} Free that capacity, "
                           f"add nodes, or lower spec.distributed.gpusPerNode / spec.resources.")
    return None


def waits_on_claims(message: str) -> bool:
    """Whether a scheduler message says the pod waits on its PersistentVolumeClaims (missing or unbound)."""
    return "persistentvolumeclaim" in message.lower()


def claims_in_question(pods: list[dict]) -> bool:
    """Whether any active pod cannot be placed because of its claims (then the reconciler reads them)."""
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False" and waits_on_claims(c.get("message") or "")
               for p in pods if is_active(p) for c in (p.get("status") or {}).get("conditions") or [])


def diagnose(pods: list[dict], failed_create_message: Optional[str], nodes: int, refs: Refs) -> Optional[Problem]:
    """The first cause found, most basic first: pods not created, not placed, not started; None when none."""
    active = [p for p in pods if is_active(p)]
    if failed_create_message and len(active) < nodes:
        return failed_create(failed_create_message, refs)
    return unschedulable(pods, refs) or waiting(pods, refs)
