#!/usr/bin/env python3
"""Checks the daisi Helm chart without a cluster. It fails, never skips: a machine without
Helm's engine or the Kubernetes schemas fails the check and says what to install
(`make test` installs both through deploy/dev/setup.sh).

Static checks (PyYAML):
  * Chart.yaml and values.yaml parse; Chart.yaml is apiVersion v2 with name/version/appVersion;
  * every expected template file exists;
  * in every template, `{{` and `}}` balance, and block openers (if/range/with/define/block)
    balance `end`s;
  * every `.Values.x.y` path a template names exists in values.yaml;
  * a few values invariants (coordinator and router run >= 2 replicas, probes and
    securityContext are set, secrets are empty by default).

With Helm's engine (the `helm` binary when on PATH, else the `helm_python` module of
`pip install helm-python-sdk`, which embeds Helm's Go library):
  * `helm lint --strict` with each ci/*-values.yaml (values.schema.json included);
  * a render with each ci/*-values.yaml (the default install and a production-like one with
    every feature on), every document parsed as YAML, and the invariants the chart promises
    checked on the output (enableServiceLinks false, startup/liveness/readiness probes,
    terminationGracePeriodSeconds above the shutdown grace, the edge's downward-API env, the
    partitioned routers' StatefulSet, HPAs, ...);
  * every rendered manifest validated against the Kubernetes OpenAPI schemas of
    KUBERNETES_VERSIONS, strictly (unknown fields are errors), with `kubernetes-validate`;
    the Prometheus operator's kinds, which those schemas lack, get a structural check and the
    PrometheusRule's groups go through `promtool check rules`;
  * internal gRPC authentication (the shared secret from the Secret, the admin credential on
    the coordinator only, internal TLS files mounted where the variables point) and the
    NetworkPolicies (edge delivery from routers only, coordinator gRPC from edges, routers and
    the labelled ops namespaces, the mint port from the namespace and mintFrom);
  * renders that must fail do (no secrets, a chart-owned key in `config`, a short grace period,
    values the schema rejects, an autoscaled partitioned router, an Ingress without hosts, a
    minting key list the edge would refuse, an admin credential the coordinator would refuse);
  * renders with specific values say what they must: listenHost "::" gives bracketed listen
    addresses, an edge terminating TLS (TLS_CERT_PATH) is probed and tested over HTTPS,
    pdb.maxUnavailable 0 stays 0, and NOTES masks the password of a Redis or NATS URL.

It does not run anything in a cluster.

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
    "_helpers.tpl", "_router.tpl", "NOTES.txt", "secret.yaml", "pdb.yaml",
    "edge-deployment.yaml", "edge-service.yaml", "edge-mint-service.yaml",
    "coordinator-deployment.yaml", "coordinator-service.yaml",
    "router-deployment.yaml", "router-service.yaml",
    "hpa.yaml", "ingress.yaml", "servicemonitor.yaml", "prometheusrule.yaml",
    "networkpolicy.yaml", "tests/ready.yaml",
]
# Kubernetes versions whose schemas every manifest must satisfy: the oldest the chart's
# features need (the native preStop sleep is 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.30.0", "latest"]
# Kinds of the Prometheus operator (CRDs), absent from the Kubernetes schemas.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
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

    def notes(self, values: dict) -> str:
        """The rendered NOTES.txt (what `helm install` prints). Raises RuntimeError on failure."""
        if self.binary:
            # `helm template` leaves NOTES out; a client-side dry run prints them last.
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                yaml.safe_dump(values, f)
                f.flush()
                out = subprocess.run([self.binary, "install", "prod", str(CHART), "-f", f.name,
                                      "--namespace", "rt", "--dry-run=client"],
                                     capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return out.stdout.rpartition("NOTES:")[2]
        rendered = self.render(values)
        return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))

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


def containers(docs: list[dict]) -> dict[str, dict]:
    """Component -> the container of its Deployment or StatefulSet."""
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]:
            d["spec"]["template"]["spec"]["containers"][0]
            for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def test_commands(docs: list[dict]) -> dict[str, list[str]]:
    """Component -> the command of its container in the `helm test` pod."""
    (pod,) = [d for d in docs
              if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    return {c["name"]: c["command"] for c in pod["spec"]["containers"]}


def output_checks(label: str, docs: list[dict], values: dict) -> None:
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    check(len(kinds) == len(set(kinds)), f"{label}: duplicate objects {kinds}")
    workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
                 for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    check(sorted(workloads) == sorted(COMPONENTS), f"{label}: workloads {sorted(workloads)}")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d
            for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    for component, d in workloads.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        where = f"{label}: {component}"
        check(pod.get("enableServiceLinks") is False, f"{where}: enableServiceLinks must be false")
        check(container["startupProbe"]["httpGet"]["path"] == "/health", f"{where}: startup")
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
            check(name.startswith(("DAISI_", "RUST_LOG", "OTEL_", "POD_IP", "SSL_CERT_")),
                  f"{where}: unexpected variable {name}")
        # Every mount names a volume of the pod.
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            check(mount["name"] in volumes, f"{where}: mount {mount['name']} has no volume")
        # An autoscaled workload leaves its replica count to the HPA.
        name = d["metadata"]["name"]
        if name in hpas:
            check("replicas" not in d["spec"], f"{where}: fixed replicas fight the HPA")
            check(hpas[name]["spec"]["scaleTargetRef"]["kind"] == d["kind"],
                  f"{where}: HPA targets the wrong kind")
    router = workloads["router"]
    router_env = env_of(router["spec"]["template"]["spec"]["containers"][0])
    if router["kind"] == "StatefulSet":
        # Partitioned: one replica per partition, each reading its ordinal from its pod name.
        count = router["spec"]["replicas"]
        check(router_env["DAISI_ROUTER_PARTITIONS"]["value"] == str(count),
              f"{label}: DAISI_ROUTER_PARTITIONS must equal the StatefulSet's replicas")
        check(router_env["DAISI_ROUTER_PARTITION"]["valueFrom"]["fieldRef"]["fieldPath"]
              == "metadata.name", f"{label}: the partition must come from the pod name")
    else:
        check("DAISI_ROUTER_PARTITION" not in router_env, f"{label}: stray partition setting")
    edge_env = env_of(workloads["edge"]["spec"]["template"]["spec"]["containers"][0])
    check(edge_env["DAISI_EDGE_POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name",
          f"{label}: edge pod id must come from metadata.name")
    check(edge_env["DAISI_EDGE_ADVERTISE_URL"]["value"].startswith(("http://$(POD_IP):",
                                                                    "http://[$(POD_IP)]:")),
          f"{label}: edge advertise url must use the pod IP")
    # json.v2 recovery replays from the stream the routers consume: same NATS, same stream.
    if values.get("edge", {}).get("recovery", {}).get("enabled", True):
        def source(entry: dict | None) -> tuple:
            entry = entry or {}
            return (entry.get("value"), entry.get("valueFrom"))
        check(source(edge_env.get("DAISI_EDGE_NATS_URL")) == source(router_env["DAISI_ROUTER_NATS_URL"]),
              f"{label}: the edge's recovery NATS differs from the router's")
        for edge_name, router_name in (("DAISI_EDGE_NATS_STREAM", "DAISI_ROUTER_STREAM"),
                                       ("DAISI_EDGE_SUBJECT_PREFIX", "DAISI_ROUTER_SUBJECT_PREFIX")):
            check(edge_env.get(edge_name, {}).get("value") == router_env.get(router_name, {}).get("value"),
                  f"{label}: {edge_name} differs from {router_name}")
    else:
        check("DAISI_EDGE_NATS_URL" not in edge_env, f"{label}: recovery off but NATS set")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    check(any(s["spec"].get("clusterIP") == "None" for s in services.values()),
          f"{label}: no headless Service for the edge gRPC port")
    # Token minting: its own port and a cluster-internal Service, never the public one.
    edge_container = workloads["edge"]["spec"]["template"]["spec"]["containers"][0]
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
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]["name"]
                check(backend in services, f"{label}: Ingress backend {backend} is no Service")
    internal_checks(label, docs, workloads)
    tests = [d for d in docs
             if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    check(len(tests) == 1, f"{label}: expected one `helm test` pod, found {len(tests)}")


def internal_checks(label: str, docs: list[dict], workloads: dict) -> None:
    """Internal gRPC authentication and the NetworkPolicies (issue 11)."""
    tls_files = {"DAISI_INTERNAL_TLS_CERT": "tls.crt", "DAISI_INTERNAL_TLS_KEY": "tls.key",
                 "DAISI_INTERNAL_TLS_CA": "ca.crt"}
    tls_on = []
    for component, d in workloads.items():
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = env_of(container)
        where = f"{label}: {component}"
        ref = env["DAISI_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"]
        check(ref["key"] == "internal-token" and ref.get("optional") is True,
              f"{where}: DAISI_INTERNAL_TOKEN must come from the Secret, optional")
        check(("DAISI_INTERNAL_ADMIN_TOKEN" in env) == (component == "coordinator"),
              f"{where}: only the coordinator holds the admin credential")
        present = [n for n in tls_files if n in env]
        check(present in ([], list(tls_files)), f"{where}: half an internal TLS setting {present}")
        if present:
            tls_on.append(component)
            mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
            check("internal-tls" in mounts, f"{where}: internal TLS files are not mounted")
            for name, file in tls_files.items():
                check(env[name]["value"] == f"{mounts['internal-tls']['mountPath']}/{file}",
                      f"{where}: {name} does not point at the mounted {file}")
            secret = {v["name"]: v for v in pod["volumes"]}["internal-tls"]["secret"]
            check(bool(secret["secretName"]), f"{where}: internal TLS Secret without a name")
    check(tls_on in ([], sorted(COMPONENTS), list(workloads)),
          f"{label}: internal TLS on for {tls_on} only")
    policies = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]
                for d in docs if d["kind"] == "NetworkPolicy"}
    check(sorted(policies) == sorted(COMPONENTS), f"{label}: NetworkPolicies for {sorted(policies)}")
    if sorted(policies) != sorted(COMPONENTS):
        return

    def sources(spec: dict, port: str) -> list[dict] | None:
        """Peers allowed on `port` (None: from anywhere)."""
        peers: list[dict] = []
        for rule in spec["ingress"]:
            if any(p["port"] == port for p in rule.get("ports", [])):
                if "from" not in rule:
                    return None
                peers += rule["from"]
        return peers

    def component_of(peer: dict) -> str | None:
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        return labels.get("app.kubernetes.io/component")

    for component, spec in policies.items():
        check(spec["policyTypes"] == ["Ingress"], f"{label}: {component} policy types")
        check(sources(spec, "http") is None, f"{label}: {component} http must stay reachable")
    edge_grpc = sources(policies["edge"], "grpc") or []
    check([component_of(p) for p in edge_grpc] == ["router"],
          f"{label}: edge delivery must be reachable from routers only: {edge_grpc}")
    coordinator = sources(policies["coordinator"], "grpc") or []
    check(sorted(filter(None, map(component_of, coordinator))) == ["edge", "router"],
          f"{label}: coordinator gRPC must admit edges and routers: {coordinator}")
    check(any("namespaceSelector" in p and "podSelector" not in p for p in coordinator),
          f"{label}: coordinator gRPC must admit the labelled ops namespaces")
    check(all("namespaceSelector" not in p or p["namespaceSelector"].get("matchLabels")
              for p in coordinator), f"{label}: an unlabelled namespaceSelector admits everyone")
    mint = sources(policies["edge"], "mint")
    check(mint is not None and {"podSelector": {}} in mint,
          f"{label}: the mint port must be limited to this namespace and mintFrom")
    check("ingress" in policies["router"] and all(
        "grpc" not in [p["port"] for p in r.get("ports", [])] for r in policies["router"]["ingress"]),
        f"{label}: routers serve no gRPC")


def validate_kubernetes(label: str, docs: list[dict]) -> None:
    """Every manifest against the Kubernetes schemas (strict), operator kinds structurally."""
    import kubernetes_validate  # type: ignore[import-not-found]

    for doc in docs:
        name = f"{label}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") in OPERATOR_KINDS:
            check(doc.get("apiVersion") == "monitoring.coreos.com/v1", f"{name}: apiVersion")
            continue
        for version in KUBERNETES_VERSIONS:
            target = kubernetes_validate.latest_version() if version == "latest" else version
            try:
                kubernetes_validate.validate(doc, target, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = "/".join(str(p) for p in err.path)
                check(False, f"{name} is invalid for Kubernetes {target} at {path}: {err.message}")
            except Exception as err:  # schema missing for a kind: a failure, not a pass
                check(False, f"{name}: cannot validate for Kubernetes {target}: {err}")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for monitor in monitors:
        endpoints = monitor["spec"]["endpoints"]
        check(bool(endpoints) and all(e["port"] == "http" and e["path"] == "/metrics"
                                      for e in endpoints), f"{label}: ServiceMonitor endpoints")
        wanted = monitor["spec"]["selector"]["matchLabels"]
        scraped = [d for d in docs if d["kind"] == "Service"
                   and all(d["metadata"]["labels"].get(k) == v for k, v in wanted.items())
                   and any(p["name"] == "http" for p in d["spec"]["ports"])]
        check(len(scraped) == 3, f"{label}: ServiceMonitor selects {len(scraped)} Services, not 3")
    for rule in (d for d in docs if d["kind"] == "PrometheusRule"):
        promtool_check(label, rule["spec"])


def promtool_check(label: str, spec: dict) -> None:
    """The rendered rule groups through `promtool check rules`."""
    promtool = shutil.which("promtool")
    if not promtool:
        check(False, "promtool not found (Debian package `prometheus`; make test installs it)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": spec["groups"]}, f)
        f.flush()
        out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    check(out.returncode == 0, f"{label}: PrometheusRule fails promtool: {out.stdout}{out.stderr}")
    check(len(spec["groups"]) >= 5, f"{label}: PrometheusRule has {len(spec['groups'])} groups")


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
            docs = documents(engine.render(overrides))
        except RuntimeError as err:
            check(False, f"render with {case.name} failed: {err}")
            continue
        output_checks(case.name, docs, values)
        validate_kubernetes(case.name, docs)
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
    # values.schema.json: wrong types, unknown keys, values outside their set.
    must_fail(engine, "replicas as text", {**base, "edge": {"replicas": "two"}}, "/edge/replicas")
    must_fail(engine, "misspelt key", {**base, "router": {"replica": 3}}, "replica")
    must_fail(engine, "unknown log format", {**base, "telemetry": {"logFormat": "xml"}},
              "logFormat")
    must_fail(engine, "port out of range", {**base, "edge": {"ports": {"http": 70000}}}, "http")
    owned_partition = {**base, "router": {"partitions": 2, "config": {"PARTITION": "1"}}}
    must_fail(engine, "partition in config", owned_partition,
              "DAISI_ROUTER_PARTITION is set by the chart")
    both = {**base, "router": {"partitions": 2, "autoscaling": {"enabled": True}}}
    must_fail(engine, "autoscaled partitioned router", both, "exclude each other")
    no_tls_secret = {**base, "internalTls": {"enabled": True}}
    must_fail(engine, "internal TLS without a Secret", no_tls_secret, "internalTls.secretName")
    short_internal = {"secrets": {**base["secrets"], "internalToken": "short"}}
    must_fail(engine, "short internal token", short_internal, "internalToken")
    same_admin = {"secrets": {**base["secrets"],
                              "internalAdminToken": base["secrets"]["internalToken"]}}
    must_fail(engine, "admin token = shared secret", same_admin, "must differ")
    owned_prev = {**base, "edge": {"config": {"PREVIOUS_SECRET_TOKEN": "x"}}}
    must_fail(engine, "previous key in config", owned_prev,
              "DAISI_EDGE_PREVIOUS_SECRET_TOKEN is set by the chart")
    no_hosts = {**base, "ingress": {"enabled": True}}
    must_fail(engine, "ingress without hosts", no_hosts, "ingress.hosts")
    # Redis Cluster: the seeds replace the single URL; a seed without a port is refused.
    seeds = ["redis://r0:6379", "redis://r1:6379"]
    clustered = documents(engine.render({**base, "redis": {"clusterUrls": seeds}}))
    coordinator = next(d for d in clustered if d["kind"] == "Deployment"
                       and d["metadata"]["labels"]["app.kubernetes.io/component"] == "coordinator")
    env = env_of(coordinator["spec"]["template"]["spec"]["containers"][0])
    check(env.get("DAISI_COORDINATOR_REDIS_CLUSTER_URLS", {}).get("value") == ",".join(seeds),
          "redis.clusterUrls: DAISI_COORDINATOR_REDIS_CLUSTER_URLS lists the seeds")
    check("DAISI_COORDINATOR_REDIS_URL" not in env,
          "redis.clusterUrls: DAISI_COORDINATOR_REDIS_URL is not set alongside the seeds")
    must_fail(engine, "cluster seed without a port",
              {**base, "redis": {"clusterUrls": ["redis://r0"]}}, "clusterUrls")
    case_checks(engine, base)
    return len(cases)


def case_checks(engine: Engine, base: dict) -> None:
    """Renders with specific values, and what each must (or must not) produce."""
    # listenHost "::" (the schema allows it): bracketed, or every service refuses ":::8080".
    for host, prefix in (("0.0.0.0", "0.0.0.0:"), ("::", "[::]:"), ("[::]", "[::]:")):
        for component, container in containers(documents(engine.render(
                {**base, "listenHost": host}))).items():
            addrs = {n: e["value"] for n, e in env_of(container).items() if n.endswith("_ADDR")}
            check(bool(addrs) and all(a.startswith(prefix) and a.count("[") <= 1
                                      for a in addrs.values()),
                  f"listenHost {host!r}: {component} listens on {addrs}")

    # An edge terminating TLS accepts TLS only on its http port: probes and `helm test` speak
    # HTTPS to it (and to it only); without TLS_CERT_PATH nothing changes.
    tls_paths = {"TLS_CERT_PATH": "/etc/daisi/tls/tls.crt", "TLS_KEY_PATH": "/etc/daisi/tls/tls.key"}
    tls_env = [{"name": f"DAISI_EDGE_{k}", "value": v} for k, v in tls_paths.items()]
    for label, edge in (("plain edge", {}), ("edge TLS via config", {"config": tls_paths}),
                        ("edge TLS via extraEnv", {"extraEnv": tls_env})):
        values = {**base, "edge": edge}
        docs = documents(engine.render(values))
        tls = bool(edge)
        for component, container in containers(docs).items():
            https = tls and component == "edge"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                scheme = container[probe]["httpGet"].get("scheme", "HTTP")
                check(scheme == ("HTTPS" if https else "HTTP"),
                      f"{label}: {component} {probe} uses {scheme}")
        for component, command in test_commands(docs).items():
            https = tls and component == "edge"
            url = command[-1]
            check(url.startswith("https://" if https else "http://"),
                  f"{label}: helm test asks {component} at {url}")
            check(("--no-check-certificate" in command) == https,
                  f"{label}: helm test {component}: certificate check flag {command}")
        notes = engine.notes(values)
        check(("curl -sk https://localhost:" in notes) == tls,
              f"{label}: NOTES' readiness check does not match the edge's TLS")

    # maxUnavailable 0 (no voluntary eviction) stays 0; unset falls back to 1.
    pdbs = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]
            for d in documents(engine.render({**base, "edge": {"pdb": {"maxUnavailable": 0}},
                                              "router": {"pdb": {"maxUnavailable": None}}}))
            if d["kind"] == "PodDisruptionBudget"}
    check(pdbs.get("edge", {}).get("maxUnavailable") == 0,
          f"pdb.maxUnavailable 0 renders as {pdbs.get('edge')}")
    check(pdbs.get("router", {}).get("maxUnavailable") == 1,
          f"pdb.maxUnavailable unset renders as {pdbs.get('router')}")

    # Minting keys: the edge's rules (door.rs), so `helm install` fails instead of the pods.
    secrets = base["secrets"]
    good = "0123456789abcdef"
    rotation = {"secrets": {**secrets, "mintApiKey": f" {good}x , {good}y "}}
    try:
        engine.render(rotation)
    except RuntimeError as err:
        check(False, f"a rotation list of minting keys is refused: {err}")
    must_fail(engine, "short minting key in a list",
              {"secrets": {**secrets, "mintApiKey": f"{good}, short"}}, "at least 16 characters")
    must_fail(engine, "empty item in a minting key list",
              {"secrets": {**secrets, "adminMintApiKey": f"{good},,{good}x"}}, "is empty")
    must_fail(engine, "minting key = previous socket key",
              {"secrets": {**secrets, "mintApiKey": f"{good}, {secrets['previousSecretToken']}"}},
              "must differ")
    must_fail(engine, "minting key = previous admin socket key",
              {"secrets": {**secrets, "previousAdminSecretToken": f"{good}-previous",
                           "adminMintApiKey": f"{good}-previous"}}, "must differ")

    # The coordinator refuses an admin credential when internal traffic is unauthenticated.
    admin_alone = {"secrets": {**secrets, "internalToken": ""}}
    must_fail(engine, "admin token without internal token or TLS", admin_alone,
              "secrets.internalAdminToken needs secrets.internalToken or internalTls.enabled")
    try:
        engine.render({**admin_alone, "internalTls": {"enabled": True, "secretName": "tls"}})
    except RuntimeError as err:
        check(False, f"admin token with internal TLS is refused: {err}")

    # NOTES: a password in a Redis or NATS URL is masked, the rest stays readable.
    notes = engine.notes({**base, "redis": {"url": "redis://daisi:redis-pass@redis:6379/0"},
                          "nats": {"url": "nats://u:nats-pass@n0:4222,nats://nats-token@n1:4222"}})
    for secret in ("redis-pass", "nats-pass", "nats-token"):
        check(secret not in notes, f"NOTES print the password {secret!r}")
    for shown in ("redis://daisi:***@redis:6379/0", "nats://u:***@n0:4222,nats://***@n1:4222"):
        check(shown in notes, f"NOTES do not show {shown!r}")


def main() -> int:
    values = static_checks()
    engine = Engine()
    missing = []
    if not engine.name:
        missing.append("Helm's engine (a `helm` binary, or pip install helm-python-sdk)")
    try:
        import kubernetes_validate  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        missing.append("the Kubernetes schemas (pip install kubernetes-validate)")
    if missing:
        check(False, "cannot render and validate the chart without " + " and ".join(missing)
              + "; `sudo deploy/dev/setup.sh` installs them")
        summary = "NOT rendered"
    else:
        rendered = render_checks(engine, values)
        versions = ", ".join(KUBERNETES_VERSIONS)
        summary = (f"lint, render and Kubernetes {versions} schema validation of "
                   f"{rendered} ci values file(s) via {engine.name}")
    for failure in failures:
        print(f"FAIL {failure}")
    status = "failed" if failures else "ok"
    print(f"check_chart: {status}: static checks; {summary}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
