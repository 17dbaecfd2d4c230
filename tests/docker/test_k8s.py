"""The Kubernetes manifests in docker/k8s agree with the image and the service they run.

Parsed with PyYAML and checked against the root Dockerfile (port, user), the FastAPI app's routes (probe
paths), service/config.py (FNAC_* names, the drain time) and `fnac score`'s options (the RayJob entrypoint).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"


def _documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _one(kind: str) -> dict:
    found = [doc for doc in _documents() if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in docker/k8s, found {len(found)}"
    return found[0]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _final_stage(dockerfile: str) -> str:
    """The text of the Dockerfile's last stage (what `docker build` without --target produces)."""
    return re.split(r"^FROM\s", dockerfile, flags=re.M)[-1]


def _container() -> dict:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str | None]:
    return {var["name"]: var.get("value") for var in container.get("env", [])}


def _port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def test_every_manifest_parses_and_the_kustomization_lists_the_service_parts():
    kinds = {doc["kind"] for doc in _documents()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "RayJob"} <= kinds
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert all((K8S / name).is_file() for name in listed)
    assert "rayjob.yaml" not in listed  # the batch job is applied on its own, not with the service


def test_container_port_is_the_image_port_and_the_servers_port():
    container = _container()
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    stage = _final_stage(_dockerfile())
    assert f"EXPOSE {port}" in stage
    assert re.search(rf"FNAC_PORT={port}\b", stage)
    assert int(_env(container).get("FNAC_PORT") or port) == port


def test_probe_paths_are_answered_by_the_app_on_the_container_port():
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    # No lifespan (no `with`): the model is not loaded, so /readyz must answer "not ready", not 404.
    client = TestClient(create_app(Settings()))
    container = _container()
    probes = {name: container[name] for name in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for name, probe in probes.items():
        assert _port_number(container, probe["httpGet"]["port"]) == 8000, name
        assert client.get(probe["httpGet"]["path"]).status_code in (200, 503), name
    assert client.get("/healthz").status_code == 200
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
    assert client.get("/no-such-probe").status_code == 404  # what a wrong probe path would get


def test_runs_as_the_images_non_root_user():
    stage = _final_stage(_dockerfile())
    assert re.search(r"^USER fnac$", stage, flags=re.M)
    uid = int(re.search(r"useradd --uid (\d+)", _dockerfile())[1])
    gid = int(re.search(r"groupadd --gid (\d+)", _dockerfile())[1])
    pod = _one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
    assert uid != 0
    rayjob = _one("RayJob")["spec"]["rayClusterSpec"]
    templates = [rayjob["headGroupSpec"]["template"]] + [g["template"] for g in rayjob["workerGroupSpecs"]]
    for template in templates:
        assert template["spec"]["securityContext"]["runAsUser"] == uid


def test_env_names_are_settings_of_the_service():
    from service.config import Settings

    known = {"FNAC_" + name.upper() for name in Settings.model_fields}
    names = set(_env(_container()))
    assert names, "the Deployment sets no FNAC_* variables"
    assert names <= known, f"not settings of service/config.py: {sorted(names - known)}"
    # The values are valid too: the settings class accepts them as the server would read them.
    Settings(**{name.removeprefix("FNAC_").lower(): value for name, value in _env(_container()).items()})


def test_model_comes_from_a_read_only_volume():
    container = _container()
    model = Path(_env(container)["FNAC_MODEL"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(model.parent) in mounts and mounts[str(model.parent)].get("readOnly") is True
    volumes = {v["name"]: v for v in _one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts[str(model.parent)]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in {
        doc["metadata"]["name"] for doc in _documents() if doc["kind"] == "PersistentVolumeClaim"
    }


def test_gpu_request_and_a_grace_period_longer_than_the_drain():
    from service.config import Settings

    container = _container()
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    drain = float(_env(container).get("FNAC_SHUTDOWN_TIMEOUT_S") or Settings().shutdown_timeout_s)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    grace = _one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + drain


def test_service_and_autoscaler_point_at_the_deployment():
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one("Service")["spec"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert _port_number(_container(), port["targetPort"]) == 8000
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fnac"}
    assert deployment["metadata"]["name"] == "fnac"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    cpu = str(_container()["resources"]["requests"]["cpu"])
    assert float(cpu.removesuffix("m")) > 0  # a utilisation target needs a CPU request


def test_rayjob_entrypoint_is_a_valid_ray_scoring_command():
    import argparse

    from training import score

    entrypoint = shlex.split(_one("RayJob")["spec"]["entrypoint"])
    assert entrypoint[:2] == ["fnac", "score"]
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    args = parser.parse_args(entrypoint[2:])
    assert args.engine == "ray"
    assert args.model.startswith("/models/")
    workers = _one("RayJob")["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) * g["replicas"]
        for g in workers
    )
    assert args.actors * args.gpus_per_actor <= gpus  # the actor pool fits on the cluster it asks for
