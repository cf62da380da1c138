"""deploy/k8s/serving-churn.yaml: what a cluster would run is consistent with the app, the image and the secrets rule.

Not applied to a cluster here (none runs on this machine); these checks are what can fail without one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "k8s" / "serving-churn.yaml"


def docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def test_deployment_service_and_autoscaler_select_the_same_pods():
    kinds = docs()
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment = kinds["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert kinds["Service"]["spec"]["selector"] == labels
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2  # a rollout never leaves zero pods


def test_the_container_runs_the_serving_entry_point_with_probes_resources_and_no_literal_secret():
    (container,) = docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "evergreen.serve"]
    # the flags exist in the entry point
    out = subprocess.run([sys.executable, "-m", "evergreen.serve", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in (a for a in command[3:] if a.startswith("--")):
        assert flag in out.stdout, flag
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    names = {e["name"]: e for e in container["env"]}
    for name in ("AIRFLOW_CONN_EVERGREEN_STORE", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        assert "value" not in names[name] and names[name]["valueFrom"]["secretKeyRef"], name
    assert not any(re.search(r"PASSWORD|SECRET|TOKEN", n) and "value" in e for n, e in names.items())
    assert names["EVERGREEN_SPOOL_DIR"]["value"].startswith(container["volumeMounts"][0]["mountPath"])


def test_the_image_is_the_project_image_of_the_compose_stack():
    (container,) = docs()["Deployment"]["spec"]["template"]["spec"]["containers"]
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert compose["services"]["serving-churn"]["image"] == "${EVERGREEN_IMAGE:-evergreen:latest}"
    assert container["image"] == "evergreen:latest"
