"""Deploy artefacts checked with the real tools: kubectl kustomize, kubernetes-validate,
promtool, hadolint, and the Dockerfile's install steps run in a fresh venv."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = ("dev", "prod", "prod-hpa")
CRD_SCHEMAS = {
    "PodMonitor": "podmonitor.json",
    "PrometheusRule": "prometheusrule.json",
    "ScaledObject": "scaledobject.json",
}
K8S_VERSION = "1.37.0"


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    for doc in docs:
        kind = doc["kind"]
        if kind in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[kind]).read_text())
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_deployment_is_production_shaped() -> None:
    docs = {d["kind"]: d for d in render("prod") if d["metadata"]["name"] in ("dynaqa", "dynaqa-config")}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    config = docs["ConfigMap"]["data"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + float(config["DYNAQA_DRAIN_SECONDS"]) + 15
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
    assert config["DYNAQA_CACHE_DIR"].startswith("/tmp")
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    assert {t["name"] for t in docs["ScaledObject"]["spec"]["triggers"]} == {"inflight", "degradation", "latency-p95"}
    assert "ScaledObject" not in {d["kind"] for d in render("prod-hpa")}


def dynaqa_pod(overlay: str) -> dict:
    """The pod template of the service's Deployment, as `overlay` renders it."""
    deployment = next(d for d in render(overlay) if d["kind"] == "Deployment" and d["metadata"]["name"] == "dynaqa")
    return deployment["spec"]["template"]["spec"]


def test_prod_requires_api_keys_from_a_secret_and_base_does_not() -> None:
    for overlay in ("prod", "prod-hpa"):
        pod = dynaqa_pod(overlay)
        container = pod["containers"][0]
        volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
        assert volume["secret"]["secretName"] == "dynaqa-api-keys"
        assert volume["secret"]["items"] == [{"key": "keys", "path": "keys"}]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
        assert mount["readOnly"] and "subPath" not in mount  # a subPath mount never sees a rotated Secret
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DYNAQA_API_KEYS"] == mount["mountPath"] + "/keys"
        # Probes and the scrape stay on the paths the service leaves open.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"].startswith("/v2/health/")
    monitor = next(d for d in render("prod") if d["kind"] == "PodMonitor")
    assert [e["path"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["/metrics"]
    base = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "deployment.yaml").read_text())["spec"]["template"]
    base_container = base["spec"]["containers"][0]
    assert "DYNAQA_API_KEYS" not in {e["name"] for e in base_container.get("env", [])}
    assert "api-keys" not in {v["name"] for v in base["spec"]["volumes"]}
    config = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "configmap.yaml").read_text())["data"]
    assert "DYNAQA_API_KEYS" not in config
    assert "DYNAQA_API_KEYS" not in {e["name"] for e in dynaqa_pod("dev")["containers"][0].get("env", [])}


def rules(tmp_path: Path) -> Path:
    rule = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing (Debian package prometheus; .ci/run installs it)"
    return binary


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    result = subprocess.run([promtool(), "check", "rules", str(rules(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_promtool_unit_tests_cover_the_burn_rate_alerts(tmp_path: Path) -> None:
    rules(tmp_path)
    shutil.copy(REPO / "deploy" / "prometheus" / "rules-test.yml", tmp_path / "rules-test.yml")
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "rules-test.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_passes_and_copy_sources_exist() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([binary, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_dashboard_uses_only_exported_series() -> None:
    from service.metrics import Metrics

    exported = set()
    for family in Metrics([300.0], ["w100d100"]).registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}[family.type]
        exported |= {family.name + suffix for suffix in suffixes}
    rule = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dynaqa-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    for expr in exprs:
        for name in re.findall(r"\b(dynaqa[:_][a-z0-9_:]+)", expr):
            assert name in exported or name in recorded, (name, expr)


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """The image's RUN step (deploy/docker/install.sh) run as CI can: same script, a new venv."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        ["sh", str(REPO / "deploy" / "docker" / "install.sh"), str(REPO)],
        env={"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)},
        check=True,
        capture_output=True,
        timeout=900,
    )
    result = subprocess.run([str(env_dir / "bin" / "dynaqa"), "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "DYNAQA_" in result.stdout
    code = (
        "import models.infer.checkpoint as c, models.infer.native as n; "
        "print(c.DEFAULT_DIR, all(p.is_file() for p in n.SOURCES + n.HEADERS))"
    )
    probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    # The checkpoint ships inside the installed package, and so does the C++ source the image builds.
    assert "site-packages" in probe.stdout and probe.stdout.split()[-1] == "True"
