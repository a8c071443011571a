"""diagnosis: each reason a trainer pod is not running, with a message naming the missing object and its field."""

from __future__ import annotations

import pytest
from support.fake_cluster import make_pod

from finetune_operator.diagnosis import Refs, diagnose, refs_of

SPEC = {"model": {"hubId": "org/m"}, "dataset": {"paths": ["t.jsonl"], "volume": {"claimName": "data"}},
        "output": {"path": "o", "volume": {"create": {"size": "1Gi"}}}, "hfTokenSecretRef": {"name": "hf-token"},
        "scheduling": {"priorityClassName": "high"}}
REFS = refs_of(SPEC, "ns", "demo-output")


def unschedulable(msg: str) -> dict:
    pod = make_pod(phase="Pending")
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}]
    return pod


def test_refs_name_the_fields():
    assert REFS == Refs("ns", {"data": "spec.dataset.volume.claimName",
                               "demo-output": "spec.output.volume.create (the operator's claim)"},
                        {"hf-token": "spec.hfTokenSecretRef.name"}, "high")


@pytest.mark.parametrize("pods,failed_create,reason,fragments", [
    ([], 'pods "demo-0-" is forbidden: no PriorityClass with name high was found', "PriorityClassNotFound",
     ["PriorityClass high", "spec.scheduling.priorityClassName"]),
    ([], 'pods "x" is forbidden: exceeded quota: gpu, requested: nvidia.com/gpu=1', "QuotaExceeded", ["quota"]),
    ([], 'pods "x" is forbidden: violates PodSecurity "restricted:latest"', "PodSecurityViolation", ["Pod Security"]),
    ([make_pod(phase="Pending", waiting={"reason": "CreateContainerConfigError", "message": 'secret "hf-token" not found'})],
     None, "SecretNotFound", ['Secret "hf-token"', "spec.hfTokenSecretRef.name", "kubectl -n ns create secret"]),
    ([make_pod(phase="Pending", waiting={"reason": "CreateContainerConfigError",
                                         "message": "couldn't find key token in Secret ns/hf-token"})],
     None, "SecretKeyNotFound", ["spec.hfTokenSecretRef.key"]),
    ([make_pod(phase="Pending", waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image"})],
     None, "ImagePullBackOff", ["img:1", "spec.image"]),
    ([unschedulable('0/3 nodes are available: persistentvolumeclaim "data" not found.')], None,
     "PersistentVolumeClaimNotFound", ['"data"', "spec.dataset.volume.claimName"]),
    ([unschedulable("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.")], None,
     "PersistentVolumeClaimNotBound", ["data, demo-output"]),
    ([unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")], None, "Unschedulable",
     ["1 nvidia.com/gpu", "add nodes"]),
])
def test_each_cause_has_its_own_reason(pods, failed_create, reason, fragments):
    problem = diagnose(pods, failed_create, 1, REFS)
    assert problem.reason == reason
    for fragment in fragments:
        assert fragment in problem.message, problem.message
    if reason != "Unschedulable":
        assert "add nodes" not in problem.message


def test_a_failed_create_explained_away_by_running_pods_is_not_reported():
    assert diagnose([make_pod(phase="Pending")], "no PriorityClass with name high was found", 1, REFS) is None
