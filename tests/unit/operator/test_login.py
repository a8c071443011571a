"""How the operator logs in to the API server: in a pod, at the address the kubelet gives it."""

from __future__ import annotations

import kopf
import pytest

from finetune_operator import handlers


@pytest.fixture
def service_account(monkeypatch):
    """kopf's ServiceAccount login as it answers in a pod (token and CA mounted), whatever this machine has."""
    info = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t0k3n", ca_path="/var/run/ca.crt",
                               default_namespace="finetune-system")
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: info)
    return info


def test_in_a_pod_the_server_is_the_one_the_kubelet_names(monkeypatch, service_account):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = handlers.on_login_credentials(settings=None)
    assert info.server == "https://10.96.0.1:6443"
    assert (info.token, info.ca_path, info.default_namespace) == ("t0k3n", "/var/run/ca.crt", "finetune-system")


def test_ipv6_service_host_is_bracketed_and_without_it_kopfs_default_stays(monkeypatch, service_account):
    assert handlers.in_cluster_server({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}) \
        == "https://[fd00::1]:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    assert handlers.on_login_credentials(settings=None).server == "https://kubernetes.default.svc"


def test_outside_a_pod_the_kubeconfig_is_used(monkeypatch):
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.setattr(kopf, "login_with_kubeconfig", lambda **_: kopf.ConnectionInfo(server="https://127.0.0.1:1"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert handlers.on_login_credentials(settings=None).server == "https://127.0.0.1:1"
