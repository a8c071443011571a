"""The CLI's one door to a cluster: kubeconfig and context like kubectl, FineTuneJob and pod calls, plain errors.

Why a module of its own: `submit`, `status`, `logs`, `cancel`, `list` and `resume` all need the same things —
the current context (or `--context`), the namespace kubectl would use, the FineTuneJob API, and every failure
of the way there (no kubeconfig, API server unreachable, CRD not installed, refused by admission, forbidden by
RBAC) said in one line naming the object and what to do. Only this module imports the `kubernetes` client, so
the other CLI modules stay importable (and testable) without it, and the trainer never sees it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from finetune_api.contract import UserError
from finetune_api.job import GROUP, KIND, PLURAL, VERSION

JOB_NAME_LABEL = "finetune.io/job-name"  # the operator's label on every child (operator/finetune_operator/names.py)
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
FIELD_MANAGER = "finetune-cli"
INSTALL_HINT = ("install the operator (it brings the CRD): helm install finetune-operator charts/finetune-operator "
                "-n finetune-system --create-namespace")


class ClusterError(UserError):
    """A cluster call failed for a reason the user can act on (printed as one `error:` line)."""


class NotFound(ClusterError):
    """The named object does not exist."""


class AlreadyExists(ClusterError):
    """An object of that name exists already."""


@dataclass
class Target:
    """Where commands go: the kubeconfig context's name, its server and the namespace in effect."""

    context: Optional[str]
    server: str
    namespace: str


def _status_message(exc) -> tuple[str, list[dict]]:
    """(message, causes) of an ApiException's Status body (the text kubectl prints)."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return (exc.body or exc.reason or "").strip(), []
    if not isinstance(body, dict):
        return str(body), []
    return body.get("message") or exc.reason or "", (body.get("details") or {}).get("causes") or []


def refusal(exc, what: str, context: Optional[str] = None) -> ClusterError:
    """A ClusterError for an ApiException, in the API server's own words (field by field when it names fields).

    Args:
        exc: the kubernetes client's ApiException.
        what: the object, e.g. `FineTuneJob default/llama-lora`.
        context: the kubeconfig context, to name it when the object is not found.
    """
    message, causes = _status_message(exc)
    status = getattr(exc, "status", None)
    if status == 404:
        where = f" in context {context}" if context else ""
        if message.startswith("namespaces "):  # the namespace itself is missing
            return NotFound(f"{what}: {message}{where} (kubectl create namespace, or pass --namespace)")
        return NotFound(f"{what} not found{where} (finetune list shows the jobs there)")
    if status == 409 and "already exists" in message:
        return AlreadyExists(f"{what} already exists")
    if status == 403:
        return ClusterError(f"forbidden: {message} (ask your cluster admin for rights on finetunejobs.finetune.io, "
                            "pods, pods/log and events in this namespace, or use --context/--namespace where you "
                            "have them)")
    if status == 401:
        return ClusterError(f"the API server did not accept your credentials ({message}); refresh your "
                            "kubeconfig (e.g. log in again)")
    fields = [f"{c['field']}: {c.get('message', '')}" for c in causes if c.get("field")]
    if status == 422 and fields:
        return ClusterError(f"the API server refused {what}:\n  " + "\n  ".join(fields))
    return ClusterError(f"the API server refused {what} ({status} {getattr(exc, 'reason', '')}): {message}")


class Kube:
    """FineTuneJob and pod calls against one context and namespace.

    Raises (every method):
        ClusterError: the call failed; the message says why and what to do.
    """

    def __init__(self, context: Optional[str] = None, namespace: Optional[str] = None,
                 request_timeout: float = 30.0):
        from kubernetes import client, config

        self.request_timeout = request_timeout
        ctx_namespace = None
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not _kubeconfig_exists() and not context:
                config.load_incluster_config()
                api = client.ApiClient()
                ctx_name = "in-cluster"
                ctx_namespace = _incluster_namespace()
            else:
                contexts, current = config.list_kube_config_contexts()
                chosen = next((c for c in contexts if c["name"] == context), None) if context else current
                if context and chosen is None:
                    raise ClusterError(f"--context {context}: no such context in your kubeconfig (have: "
                                       f"{', '.join(c['name'] for c in contexts) or 'none'})")
                ctx_name = (chosen or {}).get("name")
                ctx_namespace = ((chosen or {}).get("context") or {}).get("namespace")
                api = config.new_client_from_config(context=context)
        except config.ConfigException as e:
            raise ClusterError(f"no usable kubeconfig ({e}): set KUBECONFIG or write ~/.kube/config, as for "
                               "kubectl (finetune run job.yaml trains on this machine without a cluster)") from None
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.target = Target(ctx_name, api.configuration.host, namespace or ctx_namespace or "default")

    @property
    def namespace(self) -> str:
        return self.target.namespace

    def _call(self, what: str, fn, *args, **kw):
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.request_timeout, **kw)
        except ApiException as e:
            if e.status == 404 and _no_api(e):
                raise ClusterError(f"the cluster at {self.target.server} has no FineTuneJob API "
                                   f"({PLURAL}.{GROUP}/{VERSION}): {INSTALL_HINT}") from None
            raise refusal(e, what, self.target.context) from None
        except (HTTPError, OSError) as e:
            raise ClusterError(f"cannot reach the API server at {self.target.server} (context "
                               f"{self.target.context}): {type(e).__name__}: {e}") from None

    # ----------------------------------------------------------------------------------------- FineTuneJobs
    def _what(self, name: str) -> str:
        return f"{KIND} {self.namespace}/{name}"

    def create(self, body: dict) -> dict:
        return self._call(self._what(body["metadata"]["name"]), self.custom.create_namespaced_custom_object,
                          GROUP, VERSION, self.namespace, PLURAL, body, field_manager=FIELD_MANAGER)

    def get(self, name: str) -> dict:
        return self._call(self._what(name), self.custom.get_namespaced_custom_object,
                          GROUP, VERSION, self.namespace, PLURAL, name)

    def list(self, all_namespaces: bool = False) -> list[dict]:
        if all_namespaces:
            res = self._call(f"{KIND}s", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            res = self._call(f"{KIND}s in {self.namespace}", self.custom.list_namespaced_custom_object,
                             GROUP, VERSION, self.namespace, PLURAL)
        return res.get("items") or []

    def patch(self, name: str, patch: dict) -> dict:
        """A JSON merge patch of the FineTuneJob (the API server's admission and CEL rules apply)."""
        return self._call(self._what(name), self.custom.patch_namespaced_custom_object,
                          GROUP, VERSION, self.namespace, PLURAL, name, patch, field_manager=FIELD_MANAGER)

    def delete(self, name: str) -> None:
        self._call(self._what(name), self.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace,
                   PLURAL, name, propagation_policy="Background")

    def follow(self, name: str, chunk_seconds: int = 30) -> Iterator[tuple[str, Optional[dict]]]:
        """The FineTuneJob's versions as the API server announces them, as (what, object) pairs.

        `what` is `object` (the object now: first the current one, then each change), `deleted` (the end), or
        `idle` (a watch chunk of at most `chunk_seconds` ended quietly: the caller may check its deadline).
        Resumes from the last resourceVersion, re-reading the object when that has expired or the connection
        dropped (a few times at most), so nothing hangs on a dead connection.
        """
        from kubernetes import watch
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        obj = self.get(name)
        yield "object", obj
        rv = obj["metadata"]["resourceVersion"]
        failures = 0
        while True:
            try:
                for ev in watch.Watch().stream(
                        self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                        field_selector=f"metadata.name={name}", resource_version=rv, timeout_seconds=chunk_seconds,
                        allow_watch_bookmarks=True, _request_timeout=chunk_seconds + 15):
                    failures = 0
                    kind, o = ev["type"], ev["object"]
                    rv = (o.get("metadata") or {}).get("resourceVersion") or rv
                    if kind == "DELETED":
                        yield "deleted", None
                        return
                    if kind in ("ADDED", "MODIFIED"):
                        yield "object", o
                yield "idle", None
            except ApiException as e:
                if e.status != 410:
                    raise refusal(e, self._what(name)) from None
                obj = self.get(name)  # the resourceVersion expired: start again from the object as it is
                rv = obj["metadata"]["resourceVersion"]
                yield "object", obj
            except (HTTPError, OSError) as e:
                failures += 1
                if failures > 5:
                    raise ClusterError(f"lost the watch on {self._what(name)} at {self.target.server}: {e}") from None
                try:
                    obj = self.get(name)
                except NotFound:
                    yield "deleted", None
                    return
                rv = obj["metadata"]["resourceVersion"]
                yield "object", obj

    # ----------------------------------------------------------------------------------------- pods, events
    def pods(self, name: str) -> list[dict]:
        """The trainer pods of FineTuneJob `name` (every attempt), oldest first."""
        res = self._call(f"pods of {self._what(name)}", self.core.list_namespaced_pod, self.namespace,
                         label_selector=f"{JOB_NAME_LABEL}={name}")
        pods = [self.api.sanitize_for_serialization(p) for p in res.items]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def events(self, name: str) -> list[dict]:
        res = self._call(f"events of {self._what(name)}", self.core.list_namespaced_event, self.namespace,
                         field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}")
        items = [self.api.sanitize_for_serialization(e) for e in res.items]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def log_lines(self, pod: str, follow: bool, tail: Optional[int] = None,
                  quiet_reconnect: float = 300.0) -> Iterator[str]:
        """The trainer container's log of `pod`, line by line (until the container ends, with `follow`).

        A follow that hears nothing for `quiet_reconnect` seconds reconnects (asking for what came since the last
        line), so a dead connection is noticed and a quiet trainer is not.
        """
        import time

        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError, ReadTimeoutError

        what = f"log of pod {self.namespace}/{pod}"
        since: Optional[int] = None
        while True:
            kw: dict[str, Any] = {"container": "trainer", "follow": follow, "_preload_content": False,
                                  "_request_timeout": (10, quiet_reconnect if follow else 60)}
            if since is not None:
                kw["since_seconds"] = since
            elif tail is not None:
                kw["tail_lines"] = tail
            try:
                resp = self.core.read_namespaced_pod_log(pod, self.namespace, **kw)
            except ApiException as e:
                raise refusal(e, what) from None
            except (HTTPError, OSError) as e:
                raise ClusterError(f"cannot read the {what}: {e}") from None
            last, buf = time.monotonic(), b""
            try:
                for chunk in resp.stream(4096):
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        last = time.monotonic()
                        yield line.decode("utf-8", "replace")
                if buf:
                    yield buf.decode("utf-8", "replace")
                return
            except ReadTimeoutError:
                if not follow:
                    raise ClusterError(f"the {what} stopped answering") from None
                since = int(time.monotonic() - last) + 1  # quiet: ask again for what came since the last line
            except (HTTPError, OSError) as e:
                raise ClusterError(f"the {what} stopped: {e}") from None
            finally:
                resp.release_conn()


def _no_api(exc) -> bool:
    """A 404 for the resource type itself (CRD not installed), not for one named object."""
    message, _ = _status_message(exc)
    body = exc.body or ""
    return "the server could not find the requested resource" in message or (
        '"details"' not in body and "not found" not in message)


def _kubeconfig_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "").split(os.pathsep) if os.environ.get("KUBECONFIG") else [
        os.path.expanduser("~/.kube/config")]
    return any(os.path.exists(p) for p in paths if p)


def _incluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "default"
