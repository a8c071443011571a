"""In a cluster the output stays inside the output volume and off the inputs: refused at render, naming the field."""

from __future__ import annotations

import pytest

from finetune_api.loading import validate_job
from finetune_operator.pod_config import OUTPUT_MOUNT, RenderError, build_trainer_config, resolve_path
from finetune_operator.render import render_children


def job(output: dict, model: dict | None = None):
    return validate_job({
        "apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "demo"},
        "spec": {"model": model or {"hubId": "org/model"},
                 "dataset": {"paths": ["/data/train.jsonl"], "format": "messages"}, "output": output}})


@pytest.mark.parametrize("path", ["../../etc/x", "/../etc/x", "a/../../b"])
def test_a_path_that_leaves_its_volume_is_refused(path):
    with pytest.raises(RenderError, match=r"spec.output.path .* leaves its volume .* outside /mnt/output"):
        resolve_path(path, OUTPUT_MOUNT, True, "spec.output.path")


@pytest.mark.parametrize("path,inside", [("run1", "/mnt/output/run1"), ("/run1", "/mnt/output/run1"),
                                         ("a/./b/", "/mnt/output/a/b"), (".", "/mnt/output")])
def test_paths_inside_the_volume_resolve_under_its_mount(path, inside):
    assert resolve_path(path, OUTPUT_MOUNT, True, "spec.output.path") == inside


def test_an_output_outside_any_volume_is_refused_because_it_is_lost_with_the_pod():
    with pytest.raises(RenderError, match=r"spec.output.path '/etc/x' is not on a volume: .* set spec.output.volume"):
        render_children(job({"path": "/etc/x"}), uid="u")


def test_tmp_without_a_volume_stays_possible_for_smoke_runs():
    assert build_trainer_config(job({"path": "/tmp/out"})).output_dir == "/tmp/out"
    assert render_children(job({"path": "/tmp/out"}), uid="u")


def test_the_output_may_not_be_the_model_folder():
    with pytest.raises(RenderError, match=r"spec.output.path '/tmp/m' is also spec.model.path"):
        build_trainer_config(job({"path": "/tmp/m"}, model={"path": "/tmp/m"}))


def test_bad_kubernetes_values_never_reach_a_pod_spec():
    """Quantities and tolerations are checked by the spec itself, so render never sees them."""
    from finetune_api.loading import SpecError

    base = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "demo"},
            "spec": {"model": {"hubId": "org/m"}, "dataset": {"paths": ["/d.jsonl"], "format": "messages"},
                     "output": {"path": "/tmp/o"}}}
    for patch, field in [({"resources": {"memory": "lots"}}, "spec.resources.memory"),
                         ({"scheduling": {"tolerations": [{"key": "a", "operator": "Maybe"}]}},
                          "spec.scheduling.tolerations[0].operator")]:
        obj = {**base, "spec": {**base["spec"], **patch}}
        with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
            validate_job(obj)
