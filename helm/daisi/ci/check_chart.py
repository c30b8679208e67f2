#!/usr/bin/env python3
"""Checks the daisi Helm chart without a cluster.

Always (needs only PyYAML):
  * Chart.yaml and values.yaml parse; Chart.yaml is apiVersion v2 with name/version/appVersion;
  * every expected template file exists;
  * in every template, `{{` and `}}` balance, and block openers (if/range/with/define/block)
    balance `end`s;
  * every `.Values.x.y` path a template names exists in values.yaml;
  * a few values invariants (coordinator and router run >= 2 replicas, probes and
    securityContext are set, secrets are empty by default).

When a Helm engine is available, also (otherwise says SKIPPED and still exits 0):
  * `helm lint --strict` with each ci/*-values.yaml;
  * a render with each ci/*-values.yaml, every document parsed as YAML, and the invariants the
    chart promises checked on the output (enableServiceLinks false, /health and /ready probes,
    terminationGracePeriodSeconds above the shutdown grace, the edge's downward-API env, ...);
  * renders that must fail do (no secrets, a chart-owned key in `config`, a short grace period).
The engine is the `helm` binary when on PATH, else the `helm_python` module
(`pip install helm-python-sdk pyyaml`, which embeds Helm's Go library).

It does NOT check the output against the Kubernetes API schema, nor run anything in a cluster.

Usage: python3 helm/daisi/ci/check_chart.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check_chart: PyYAML is missing; pip install pyyaml")

CHART = Path(__file__).resolve().parent.parent
TEMPLATES = [
    "_helpers.tpl", "NOTES.txt", "secret.yaml", "pdb.yaml",
    "edge-deployment.yaml", "edge-service.yaml", "edge-mint-service.yaml",
    "coordinator-deployment.yaml", "coordinator-service.yaml",
    "router-deployment.yaml", "router-service.yaml",
]
COMPONENTS = ["edge", "coordinator", "router"]
OPENERS = re.compile(r"\{\{-?\s*(if|range|with|define|block)\b")
ENDS = re.compile(r"\{\{-?\s*end\s*-?\}\}")
VALUES_PATH = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")

failures: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        failures.append(message)


def static_checks() -> dict:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    check(chart.get("apiVersion") == "v2", "Chart.yaml: apiVersion must be v2")
    for key in ("name", "version", "appVersion"):
        check(bool(chart.get(key)), f"Chart.yaml: {key} is missing")

    for name in TEMPLATES:
        path = CHART / "templates" / name
        if not path.is_file():
            check(False, f"templates/{name} is missing")
            continue
        text = path.read_text()
        check(text.count("{{") == text.count("}}"), f"templates/{name}: unbalanced braces")
        opened, ended = len(OPENERS.findall(text)), len(ENDS.findall(text))
        check(opened == ended, f"templates/{name}: {opened} block openers, {ended} ends")
        for match in VALUES_PATH.finditer(text):
            node = values
            for part in match.group(1).strip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    check(False, f"templates/{name}: .Values{match.group(1)} not in values.yaml")
                    break
                node = node[part]

    for component in COMPONENTS:
        c = values[component]
        check(bool(c["image"]["repository"]), f"{component}.image.repository is empty")
        check(c["shutdownGraceSeconds"] >= 1, f"{component}.shutdownGraceSeconds < 1")
        check(bool(c["resources"].get("requests")) and bool(c["resources"].get("limits")),
              f"{component}.resources needs requests and limits")
    for component in ("coordinator", "router"):
        check(values[component]["replicas"] >= 2, f"{component}.replicas must default to >= 2")
    check(values["podSecurityContext"]["runAsNonRoot"] is True, "pods must run as non-root")
    check(values["securityContext"]["readOnlyRootFilesystem"] is True, "root fs must be read-only")
    check(values["securityContext"]["capabilities"]["drop"] == ["ALL"], "drop ALL capabilities")
    secrets = values["secrets"]
    check(not any(v for k, v in secrets.items()), "values.yaml must ship no secret values")
    return values


class Engine:
    """Renders and lints the chart with the helm binary or the helm_python module."""

    def __init__(self) -> None:
        self.binary = shutil.which("helm")
        self.module = None
        if not self.binary:
            try:
                import helm_python  # type: ignore[import-not-found]

                self.module = helm_python
            except ImportError:
                pass
        self.name = self.binary or ("helm_python" if self.module else None)

    def lint(self, values: dict) -> list[str]:
        if self.binary:
            out = self._run("lint", "--strict", values)
            return [] if out.returncode == 0 else [out.stdout + out.stderr]
        report = self.module.lint(str(CHART), values, strict=True)
        return report["errors"] + [m["error"] for m in report["messages"] if m["severity"] >= 2]

    def render(self, values: dict) -> dict[str, str]:
        """Template path -> rendered text. Raises RuntimeError when rendering fails."""
        if self.binary:
            out = self._run("template", "prod", values)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return {"all": out.stdout}
        try:
            with self.module.Chart.load(str(CHART)) as chart:
                return chart.render(values=values, name="prod", namespace="rt")
        except Exception as err:  # helm_python raises its own error types
            raise RuntimeError(str(err)) from err

    def _run(self, command: str, first: str, values: dict) -> subprocess.CompletedProcess:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(values, f)
            f.flush()
            args = [self.binary, command, first, str(CHART), "-f", f.name]
            if command == "lint":
                args = [self.binary, "lint", "--strict", str(CHART), "-f", f.name]
            return subprocess.run(args, capture_output=True, text=True)


def documents(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        try:
            docs += [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as err:
            check(False, f"{path}: rendered output is not YAML: {err}")
    return docs


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def output_checks(label: str, docs: list[dict], values: dict) -> None:
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    check(len(kinds) == len(set(kinds)), f"{label}: duplicate objects {kinds}")
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
                   for d in docs if d["kind"] == "Deployment"}
    check(sorted(deployments) == sorted(COMPONENTS), f"{label}: deployments {sorted(deployments)}")
    for component, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        where = f"{label}: {component}"
        check(pod.get("enableServiceLinks") is False, f"{where}: enableServiceLinks must be false")
        check(container["livenessProbe"]["httpGet"]["path"] == "/health", f"{where}: liveness")
        check(container["readinessProbe"]["httpGet"]["path"] == "/ready", f"{where}: readiness")
        ports = {p["name"] for p in container["ports"]}
        check("http" in ports, f"{where}: no http port")
        check(container["securityContext"]["readOnlyRootFilesystem"], f"{where}: rw root fs")
        env = env_of(container)
        grace = env[f"DAISI_{component.upper()}_SHUTDOWN_GRACE"]["value"]
        check(pod["terminationGracePeriodSeconds"] > int(grace.rstrip("s")),
              f"{where}: terminationGracePeriodSeconds must exceed {grace}")
        for name in env:
            check(name.startswith(("DAISI_", "RUST_LOG", "OTEL_", "POD_IP")),
                  f"{where}: unexpected variable {name}")
    edge_env = env_of(deployments["edge"]["spec"]["template"]["spec"]["containers"][0])
    check(edge_env["DAISI_EDGE_POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name",
          f"{label}: edge pod id must come from metadata.name")
    check(edge_env["DAISI_EDGE_ADVERTISE_URL"]["value"].startswith(("http://$(POD_IP):",
                                                                    "http://[$(POD_IP)]:")),
          f"{label}: edge advertise url must use the pod IP")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    check(any(s["spec"].get("clusterIP") == "None" for s in services.values()),
          f"{label}: no headless Service for the edge gRPC port")
    # Token minting: its own port and a cluster-internal Service, never the public one.
    edge_container = deployments["edge"]["spec"]["template"]["spec"]["containers"][0]
    edge_ports = {p["name"]: p["containerPort"] for p in edge_container["ports"]}
    check("mint" in edge_ports, f"{label}: the edge has no mint port")
    check(edge_env["DAISI_EDGE_MINT_ADDR"]["value"].endswith(f":{edge_ports.get('mint')}"),
          f"{label}: DAISI_EDGE_MINT_ADDR does not match the mint port")
    for name in ("DAISI_EDGE_MINT_API_KEY", "DAISI_EDGE_ADMIN_MINT_API_KEY"):
        ref = edge_env[name]["valueFrom"]["secretKeyRef"]
        check(ref.get("optional") is True, f"{label}: {name} must be optional")
    check(edge_env["DAISI_EDGE_PUBLIC_MINTING"]["value"] in ("true", "false"),
          f"{label}: DAISI_EDGE_PUBLIC_MINTING must be true or false")
    mint = [s for n, s in services.items() if n.endswith("-edge-mint")]
    check(len(mint) == 1, f"{label}: no -edge-mint Service")
    for s in mint:
        check(s["spec"]["type"] == "ClusterIP", f"{label}: the minting Service must be ClusterIP")
        check([p["targetPort"] for p in s["spec"]["ports"]] == ["mint"],
              f"{label}: the minting Service must target the mint port only")
    for name, s in services.items():
        if not name.endswith("-edge-mint"):
            check(all(p["targetPort"] != "mint" for p in s["spec"]["ports"]),
                  f"{label}: {name} exposes the mint port")


def must_fail(engine: Engine, label: str, values: dict, expected: str) -> None:
    try:
        engine.render(values)
        check(False, f"render should have failed: {label}")
    except RuntimeError as err:
        check(expected in str(err), f"{label}: error does not mention {expected!r}: {err}")


def render_checks(engine: Engine, values: dict) -> int:
    cases = sorted((CHART / "ci").glob("*-values.yaml"))
    for case in cases:
        overrides = yaml.safe_load(case.read_text()) or {}
        for problem in engine.lint(overrides):
            check(False, f"lint with {case.name}: {problem}")
        try:
            output_checks(case.name, documents(engine.render(overrides)), values)
        except RuntimeError as err:
            check(False, f"render with {case.name} failed: {err}")
    base = yaml.safe_load((CHART / "ci" / "default-values.yaml").read_text())
    must_fail(engine, "no secrets", {}, "secrets.tokenAesKey is required")
    bad_key = {"secrets": {**base["secrets"], "tokenAesKey": "abc"}}
    must_fail(engine, "short token key", bad_key, "64 hex characters")
    owned = {**base, "edge": {"config": {"POD_ID": "x"}}}
    must_fail(engine, "chart-owned key in config", owned, "DAISI_EDGE_POD_ID is set by the chart")
    short = {**base, "edge": {"terminationGracePeriodSeconds": 30}}
    must_fail(engine, "grace period too short", short, "must exceed")
    short_mint = {"secrets": {**base["secrets"], "mintApiKey": "short"}}
    must_fail(engine, "short minting key", short_mint, "at least 16 characters")
    reused = {"secrets": {**base["secrets"], "adminMintApiKey": base["secrets"]["secretToken"] + "-x",
                          "secretToken": base["secrets"]["secretToken"] + "-x"}}
    must_fail(engine, "minting key = socket key", reused, "must differ")
    owned_mint = {**base, "edge": {"config": {"MINT_API_KEY": "x"}}}
    must_fail(engine, "minting key in config", owned_mint, "DAISI_EDGE_MINT_API_KEY is set by the chart")
    return len(cases)


def main() -> int:
    values = static_checks()
    engine = Engine()
    if engine.name:
        rendered = render_checks(engine, values)
        summary = f"lint and render with {rendered} ci values file(s) via {engine.name}"
    else:
        summary = "render SKIPPED (no helm binary, no helm_python module)"
    for failure in failures:
        print(f"FAIL {failure}")
    status = "failed" if failures else "ok"
    print(f"check_chart: {status}: static checks; {summary}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
