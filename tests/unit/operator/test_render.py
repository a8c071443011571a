"""render: the manifests a user sees with `finetune render` and the operator creates (pure, deterministic)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from finetune_api import load_job
from finetune_api.loading import validate_job
from finetune_api.trainer_config import TrainerConfig
from finetune_operator import names
from finetune_operator.render import RenderError, render_children

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples" / "cluster").glob("*.yaml"))
UID = "1f6c2a4e-0000-4000-8000-000000000001"

BASE = {
    "apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
    "metadata": {"name": "demo", "namespace": "team-a"},
    "spec": {
        "model": {"hubId": "org/model"},
        "dataset": {"paths": ["train.jsonl"], "format": "messages", "volume": {"claimName": "data"}},
        "output": {"path": "run1", "volume": {"create": {"size": "10Gi"}}},
    },
}


def make(**spec) -> object:
    obj = copy.deepcopy(BASE)
    for k, v in spec.items():
        if k == "metadata":
            obj["metadata"] |= v
        else:
            obj["spec"][k] = v
    return validate_job(obj)


def by_kind(children: list[dict]) -> dict[str, dict]:
    return {c["kind"]: c for c in children}


def pod_spec(children) -> dict:
    return by_kind(children)["Job"]["spec"]["template"]["spec"]


def trainer(children) -> dict:
    return pod_spec(children)["containers"][0]


def test_children_are_owned_labelled_and_in_creation_order():
    children = render_children(make(), uid=UID, image="img:1")
    assert [c["kind"] for c in children] == ["ServiceAccount", "ConfigMap", "Service", "PersistentVolumeClaim", "Job"]
    for c in children:
        meta = c["metadata"]
        assert meta["namespace"] == "team-a"
        if c["kind"] == "PersistentVolumeClaim":  # the trained weights outlive the job (whenDeleted: Retain)
            assert "ownerReferences" not in meta
            continue
        assert meta["ownerReferences"] == [{"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
                                            "name": "demo", "uid": UID, "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta["labels"]["finetune.io/job-name"] == "demo"
        assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "finetune-operator"


def test_rendering_is_deterministic_and_does_not_mutate_the_job():
    job = make()
    before = job.model_dump()
    a = render_children(job, uid=UID, image="img:1")
    b = render_children(job, uid=UID, image="img:1")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert job.model_dump() == before


def test_tool_annotations_and_suspend_do_not_change_the_config():
    plain = by_kind(render_children(make(), uid=UID, image="i"))["ConfigMap"]
    noisy = make(metadata={"annotations": {"kopf.zalando.org/x": "1", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                 suspend=True)
    assert by_kind(render_children(noisy, uid=UID, image="i"))["ConfigMap"]["data"] == plain["data"]
    pod_annotations = by_kind(render_children(noisy, uid=UID, image="i"))["Job"]["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations == {}


def test_pod_security_is_restricted():
    children = render_children(make(), uid=UID, image="i")
    spec = pod_spec(children)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "demo-trainer"
    sc = trainer(children)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert trainer(children)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    sa = by_kind(children)["ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("gpus, expect", [("auto", "1"), (2, "2"), (0, None)])
def test_gpu_requests_follow_gpus_per_node(gpus, expect):
    children = render_children(make(distributed={"gpusPerNode": gpus}), uid=UID, image="i")
    res = trainer(children)["resources"]
    assert res["requests"].get("nvidia.com/gpu") == expect
    assert res["limits"].get("nvidia.com/gpu") == expect
    cfg = TrainerConfig.model_validate_json(by_kind(children)["ConfigMap"]["data"]["config.json"])
    assert cfg.device == ("cpu" if gpus == 0 else "cuda")
    assert cfg.nproc_per_node == (int(expect) if expect else 1)
    assert trainer(children)["command"] == ["finetune-train", "--config", "/etc/finetune/config.json"]


def test_one_claim_for_model_data_and_output_is_one_pod_volume_with_three_mounts():
    # a kubelet never starts a pod naming one claim in two volumes (kubernetes/kubernetes#51853): seen for real
    job = make(model={"path": "model", "volume": {"claimName": "work"}},
               dataset={"paths": ["data/train.jsonl"], "format": "messages", "volume": {"claimName": "work"}},
               output={"path": "run", "volume": {"claimName": "work"}})
    children = render_children(job, uid=UID, image="i")
    claims = [v for v in pod_spec(children)["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"name": "model", "persistentVolumeClaim": {"claimName": "work"}}]
    mounts = {m["mountPath"]: m for m in trainer(children)["volumeMounts"] if m["name"] == "model"}
    assert mounts["/mnt/model"]["readOnly"] is True and mounts["/mnt/data"]["readOnly"] is True
    assert "readOnly" not in mounts["/mnt/output"]


def test_custom_gpu_resource_name_and_shm_size():
    children = render_children(make(resources={"gpuResourceName": "amd.com/gpu", "sharedMemory": "8Gi"}),
                               uid=UID, image="i")
    assert trainer(children)["resources"]["limits"]["amd.com/gpu"] == "1"
    shm = next(v for v in pod_spec(children)["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in trainer(children)["volumeMounts"]


def test_volumes_mount_inputs_read_only_and_paths_resolve_inside_them():
    job = make(model={"path": "models/m", "volume": {"claimName": "models", "subPath": "v1"}},
               output={"path": "out", "volume": {"claimName": "results"}})
    children = render_children(job, uid=UID, image="i")
    vols = {v["name"]: v for v in pod_spec(children)["volumes"]}
    assert vols["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}
    assert vols["output"]["persistentVolumeClaim"] == {"claimName": "results"}
    mounts = {m["name"]: m for m in trainer(children)["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/mnt/model", "readOnly": True, "subPath": "v1"}
    assert "readOnly" not in mounts["output"]
    cfg = TrainerConfig.model_validate_json(by_kind(children)["ConfigMap"]["data"]["config.json"])
    assert cfg.model_path == "/mnt/model/models/m"
    assert cfg.dataset_paths == ["/mnt/data/train.jsonl"]
    assert cfg.output_dir == "/mnt/output/out"
    assert "PersistentVolumeClaim" not in by_kind(children)  # an existing claim: nothing to create


def test_created_output_pvc_is_rendered_and_mounted():
    children = render_children(make(), uid=UID, image="i")
    pvc = by_kind(children)["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == "demo-output"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    vols = {v["name"]: v for v in pod_spec(children)["volumes"]}
    assert vols["output"]["persistentVolumeClaim"]["claimName"] == "demo-output"


def test_relative_path_without_volume_is_refused_naming_the_field():
    job = make(model={"path": "models/m"})
    with pytest.raises(RenderError, match=r"spec\.model\.path"):
        render_children(job, uid=UID, image="i")


def test_hf_token_only_by_secret_reference():
    children = render_children(make(hfTokenSecretRef={"name": "hf", "key": "tok"}), uid=UID, image="i")
    env = {e["name"]: e for e in trainer(children)["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "tok"}}}
    assert all("value" not in e for e in env.values() if "TOKEN" in e["name"])
    assert "hf_" not in json.dumps(by_kind(children)["ConfigMap"]["data"]).replace('"hfTokenSecretRef"', "")


def test_single_node_runs_the_trainers_launcher_with_no_rendezvous():
    children = render_children(make(distributed={"gpusPerNode": 2}), uid=UID, image="i")
    assert trainer(children)["command"] == ["finetune-train", "--config", "/etc/finetune/config.json"]
    cfg = TrainerConfig.model_validate_json(by_kind(children)["ConfigMap"]["data"]["config.json"])
    assert cfg.rendezvous is None and cfg.plan.nproc_per_node == 2


def test_multi_node_uses_indexed_job_and_rendezvous_at_pod_zero():
    children = render_children(make(distributed={"nodes": 3, "gpusPerNode": 2}), uid=UID, image="i")
    job = by_kind(children)["Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    cfg = TrainerConfig.model_validate_json(by_kind(children)["ConfigMap"]["data"]["config.json"])
    svc = by_kind(children)["Service"]
    # the launcher takes its node rank from JOB_COMPLETION_INDEX (set by the Indexed Job) and meets at pod 0
    assert cfg.rendezvous.host == f"demo-0.{svc['metadata']['name']}.team-a.svc" and cfg.rendezvous.port == 29500
    assert pod_spec(children)["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == names.selector_labels("demo")
    assert names.selector_labels("demo").items() <= job["spec"]["template"]["metadata"]["labels"].items()
    # LoRA on 6 GPUs with strategy auto: DDP or FSDP is the memory plan's choice, made on the node
    assert (cfg.nodes, cfg.world_size, cfg.plan.strategy) == (3, 6, None)
    launch = json.loads(by_kind(children)["ConfigMap"]["data"]["launch.json"])
    assert "strategy" in launch["decidedOnTheNode"] and launch["nprocPerNode"] == 2


def test_output_claim_is_deleted_with_the_job_only_when_asked():
    kept = by_kind(render_children(make(), uid=UID, image="i"))["PersistentVolumeClaim"]
    assert "ownerReferences" not in kept["metadata"] and kept["metadata"]["labels"]["finetune.io/job-name"] == "demo"
    out = {"path": "run1", "volume": {"create": {"size": "10Gi", "whenDeleted": "Delete"}}}
    owned = by_kind(render_children(make(output=out), uid=UID, image="i"))["PersistentVolumeClaim"]
    assert owned["metadata"]["ownerReferences"][0]["uid"] == UID


def test_failure_policy_fails_fast_on_user_error_and_never_counts_preemption():
    job = by_kind(render_children(make(), uid=UID, image="i"))["Job"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}}
    assert {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [143]}} in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    spec = job["spec"]
    assert spec["backoffLimit"] == spec["backoffLimitPerIndex"] == 3 and spec["maxFailedIndexes"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never" and spec["podReplacementPolicy"] == "Failed"


def test_scheduling_passes_through_and_queue_label_reaches_the_job():
    sched = {"nodeSelector": {"gpu": "h200"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
             "affinity": {"nodeAffinity": {}}, "priorityClassName": "high"}
    children = render_children(make(scheduling=sched, metadata={"labels": {"kueue.x-k8s.io/queue-name": "q"}},
                                    suspend=True), uid=UID, image="i")
    spec = pod_spec(children)
    assert spec["nodeSelector"] == {"gpu": "h200"} and spec["priorityClassName"] == "high"
    assert spec["tolerations"] == sched["tolerations"] and spec["affinity"] == {"nodeAffinity": {}}
    job = by_kind(children)["Job"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    assert job["spec"]["suspend"] is True


def test_image_precedence():
    assert trainer(render_children(make(), uid=UID, image="op:1"))["image"] == "op:1"
    assert trainer(render_children(make(image="mine:2"), uid=UID, image="op:1"))["image"] == "mine:2"


def test_long_names_stay_valid_and_distinct():
    a, b = "x" * 60 + "a", "x" * 60 + "b"
    assert len(names.job_name(a)) <= 58 and names.job_name(a) != names.job_name(b)
    assert names.service_name("1abc").startswith("ftj-")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_cluster_example_renders(path: Path):
    children = render_children(load_job(path), uid=UID, image="i")
    assert by_kind(children)["Job"]["spec"]["template"]["spec"]["containers"][0]["image"]
    yaml.safe_dump_all(children)  # what `finetune render` prints


def test_finetune_render_cli_prints_the_manifests(capsys):
    from finetune_cli.main import main

    assert main(["render", str(EXAMPLES[0]), "--namespace", "ns1"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[-1]["kind"] == "Job" and docs[-1]["metadata"]["namespace"] == "ns1"
