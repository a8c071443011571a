"""Secrets and privileges, audited (issue 14): the operator runs under exactly the chart's RBAC, every verb the
chart grants is one it uses (the API server's audit log says which), the Hugging Face token appears nowhere but in
its Secret, and trainer pods are admitted in namespaces that enforce the "restricted" Pod Security level.
"""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from controlplane import AUDITED_GROUP, ControlPlane, wait_for
from pod_behaviour import finishes, kubelet_reports, runs_long
from scenario import (REPO, apply, children, condition, ftj, get_ftj, install_crd, provide_volume, running_operator,
                      wait_phase, wait_status)

CHART = REPO / "charts" / "finetune-operator"
RELEASE = "audit"
NS = AUDITED_GROUP.rsplit(":", 1)[1]  # the namespace whose ServiceAccounts the API server audits
SA = f"{RELEASE}-finetune-operator"
USER = f"system:serviceaccount:{NS}:{SA}"


def _chart_rbac(cp: ControlPlane) -> list[dict]:
    """The chart's ServiceAccount, ClusterRole and binding, rendered by helm for release `audit`."""
    res = cp.helm("template", RELEASE, str(CHART), "-n", NS, "--show-only", "templates/serviceaccount.yaml",
                  "--show-only", "templates/rbac.yaml")
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _granted(docs: list[dict]) -> set[tuple[str, str, str]]:
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _used(cp: ControlPlane) -> tuple[set[tuple[str, str, str]], list[dict]]:
    used, denied = set(), []
    for e in cp.audit_events(USER):
        ref = e.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/api, /apis): open to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid":
            denied.append(e)  # RBAC said no (a 403 from a terminating namespace is not a missing grant)
        used.add((ref.get("apiGroup", ""), resource, e["verb"]))
    return used, denied


@pytest.fixture(scope="module")
def audited(control_plane: ControlPlane):
    """The chart's RBAC installed, and a kubeconfig that is its ServiceAccount."""
    cp = control_plane
    install_crd(cp)
    if cp.get_json("namespace", NS) is None:
        cp.create_namespace(NS)
    docs = _chart_rbac(cp)
    for doc in docs:
        cp.apply(doc)
    yield cp, cp.token_kubeconfig(NS, SA), _granted(docs)
    for doc in docs:
        cp.kubectl("delete", doc["kind"], doc["metadata"]["name"], "-n", NS, "--wait=false")


def _foreign(kind: str, name: str, namespace: str) -> dict:
    """An object nobody's operator owns, squatting on a child's name."""
    api = "batch/v1" if kind == "Job" else "v1"
    body = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}}
    if kind == "Service":
        body["spec"] = {"ports": [{"port": 80}]}
    elif kind == "PersistentVolumeClaim":
        body["spec"] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    elif kind == "Job":
        body["spec"] = {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "registry.invalid/x", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}}}}
    return body


def test_the_operator_uses_every_verb_its_role_grants_and_never_leaks_the_token(audited, namespace):
    cp, kubeconfig, granted = audited
    token = f"hf_{uuid.uuid4().hex}"  # a secret value to look for everywhere afterwards
    res = cp.kubectl("create", "secret", "generic", "hf-token", "-n", namespace, f"--from-literal=token={token}")
    assert res.returncode == 0, res.stderr
    node = "gpu-audit"
    cp.add_gpu_node(node, gpus=8)
    try:
        with running_operator(cp, kubeconfig=kubeconfig) as runner:
            # a job that runs to the end with the token, its output claim deleted with it
            done = finishes(after="2s", result={"steps": 3, "finalLoss": 1.0, "outputPath": "/o", "manifestSha256": "x"})
            obj = done.on(ftj("tok", namespace, gpus=1, node=node, hfTokenSecretRef={"name": "hf-token"}))
            obj["spec"]["output"] = {"path": "o", "volume": {"create": {"size": "1Gi", "whenDeleted": "Delete"}}}
            provide_volume(cp, namespace, "tok-output")
            assert apply(cp, obj).returncode == 0
            # a running job, suspended (the Job is patched)
            assert apply(cp, runs_long().on(ftj("sus", namespace, gpus=1, node=node))).returncode == 0
            # a two-node job whose rank 1 fails: rank 0 is stopped (a pod deleted)
            grp = runs_long().on(ftj("grp", namespace, gpus=1, node=node, distributed={"nodes": 2, "gpusPerNode": 1}))
            assert apply(cp, grp).returncode == 0
            # an output claim kept from an earlier job, adopted by one that wants it deleted with it (patched)
            cp.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                      "metadata": {"name": "kept-output", "namespace": namespace, "labels": {
                          "finetune.io/job-name": "kept", "app.kubernetes.io/managed-by": "finetune-operator"}},
                      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
            provide_volume(cp, namespace, "kept-output")
            kept = runs_long().on(ftj("kept", namespace, gpus=1, node=node))
            kept["spec"]["output"] = {"path": "o", "volume": {"create": {"size": "1Gi", "whenDeleted": "Delete"}}}
            assert apply(cp, kept).returncode == 0
            # names taken by strangers: each kind of child is read to tell a conflict from a race
            squat = {"ServiceAccount": "c1-trainer", "ConfigMap": "c2-config", "Service": "c3",
                     "PersistentVolumeClaim": "c4-output", "Job": "c5"}
            for i, (kind, child) in enumerate(squat.items(), start=1):
                cp.apply(_foreign(kind, child, namespace))
                c = ftj(f"c{i}", namespace, gpus=1, node=node)
                if kind == "PersistentVolumeClaim":
                    c["spec"]["output"] = {"path": "o", "volume": {"create": {"size": "1Gi"}}}
                assert apply(cp, c).returncode == 0

            wait_phase(cp, "tok", namespace, "Succeeded")
            wait_phase(cp, "sus", namespace, "Running")
            cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
            wait_phase(cp, "sus", namespace, "Suspended")
            wait_phase(cp, "grp", namespace, "Running")
            rank1 = next(p for p in children(cp, namespace, "grp")["pods"]
                         if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1")
            kubelet_reports(cp, namespace, rank1, exit_code=1, message="crash")
            wait_status(cp, "grp", namespace, lambda o: o["status"].get("restarts") == 1, "a group restart", 60)
            wait_for(lambda: (children(cp, namespace, "kept")["persistentvolumeclaims"][0]["metadata"]
                              .get("ownerReferences")), 60, "the kept claim adopted")
            for i in range(1, 6):
                wait_status(cp, f"c{i}", namespace,
                            lambda o: (condition(o, "Created") or {}).get("reason") == "ChildConflict", "conflict", 60)
        log = runner.output  # (readable once the operator has stopped)
        used, denied = _used(cp)
        assert not denied, [(e["verb"], e["objectRef"]) for e in denied]
        assert used <= granted, f"used but not granted: {sorted(used - granted)}"
        kueue_only = {g for g in granted if g[0] == "kueue.x-k8s.io"}  # used with Kueue only: tests/cluster/test_kueue.py
        assert granted - kueue_only <= used, f"granted but never used (remove from the chart): {sorted(granted - used)}"

        # the token: only in its Secret - not in any other object, event, status, or the operator's log
        dump = cp.kubectl("get", "ftj,jobs,pods,configmaps,services,serviceaccounts,pvc,events", "-n", namespace,
                          "-o", "json")
        assert dump.returncode == 0 and token not in dump.stdout
        assert token not in json.dumps(get_ftj(cp, "tok", namespace)) and token not in log
        pod = children(cp, namespace, "tok")["pods"][0]
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
        assert token not in (cp.logs / "audit.log").read_text()
    finally:
        cp.kubectl("delete", "node", node, "--wait=false")


def test_trainer_pods_are_admitted_where_pod_security_is_restricted(control_plane, namespace):
    cp = control_plane
    labels = cp.get_json("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # the level is enforced: a privileged pod is refused ...
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]}}
    res = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bad))
    assert res.returncode != 0 and "violates PodSecurity" in res.stderr, res.stderr
    # ... and the operator's trainer pod, exactly as rendered, is admitted
    install_crd(cp)
    with running_operator(cp):
        assert apply(cp, runs_long().on(ftj("psa", namespace, gpus=0))).returncode == 0
        wait_phase(cp, "psa", namespace, "Running")
    pods = children(cp, namespace, "psa")["pods"]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"
