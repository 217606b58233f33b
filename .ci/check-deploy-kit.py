#!/usr/bin/env python3
"""Checks of deploy/ that schemas and promtool cannot make.

Schemas say a manifest is well formed; this says it is the one we mean:
the hardening is there, ports, binds, probes and volumes agree with each
other and with the service's defaults, nothing secret is committed, every
alert has a runbook and a test that fires and one that does not, and every
dashboard query is valid PromQL (through promtool, when given).

Usage: check-deploy-kit.py [--promtool PATH]
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "kubernetes")
PROM = os.path.join(ROOT, "deploy", "prometheus")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "imggo-receiver.json")

errors = []


def need(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def duration_secs(text):
    """humantime-ish '25s' / '1m' → seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not m:
        raise ValueError(text)
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def default_setting(section, key):
    import tomllib

    with open(os.path.join(ROOT, "config", "default.toml"), "rb") as f:
        return tomllib.load(f)[section][key]


# ---- Kubernetes ---------------------------------------------------------


def check_kubernetes():
    kustomization = yaml.safe_load(open(os.path.join(K8S, "kustomization.yaml")))
    resources = kustomization.get("resources", [])
    for r in resources:
        need(os.path.isfile(os.path.join(K8S, r)), f"kustomization lists missing {r}")
    on_disk = {f for f in os.listdir(K8S) if f.endswith((".yaml", ".yml"))} - {"kustomization.yaml"}
    need(on_disk == set(resources), f"manifests not in kustomization resources: {sorted(on_disk - set(resources))}")

    # Secret files: referenced by the generator, ignored by git, never tracked.
    tracked = subprocess.run(["git", "ls-files", "deploy/kubernetes/secrets"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    need(tracked == ["deploy/kubernetes/secrets/.gitignore"],
         f"only secrets/.gitignore may be committed under deploy/kubernetes/secrets, found {tracked}")
    secret_keys = set()
    for gen in kustomization.get("secretGenerator", []):
        for entry in gen.get("files", []):
            key, _, path = entry.partition("=")
            secret_keys.add(key)
            ignored = subprocess.run(["git", "check-ignore", "-q", os.path.join("deploy/kubernetes", path)],
                                     cwd=ROOT).returncode == 0
            need(ignored, f"secret file {path} must be git-ignored")
    need(not any(d.get("kind") == "Secret" for r in resources for d in load_all(os.path.join(K8S, r))),
         "no Secret manifest may be committed (secretGenerator reads git-ignored files)")

    docs = [d for r in resources for d in load_all(os.path.join(K8S, r))]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    sts_list = by_kind.get("StatefulSet", [])
    if not need(len(sts_list) == 1, "exactly one StatefulSet"):
        return
    sts = sts_list[0]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    need(spec.get("replicas") == 2, "two replicas")
    need(spec["selector"]["matchLabels"].items() <= labels.items(), "selector must match the pod labels")

    psc = pod.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True, "pod runAsNonRoot")
    need(psc.get("runAsUser") == 65532, "pod runs as UID 65532 (the image's user)")
    need(psc.get("fsGroup") == 65532, "fsGroup 65532 so the spool volume is writable")
    need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
    need(pod.get("automountServiceAccountToken") is False, "no service account token")

    containers = pod["containers"]
    need(len(containers) == 1, "one container")
    c = containers[0]
    csc = c.get("securityContext", {})
    need(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    need("limits" in c.get("resources", {}) and "requests" in c.get("resources", {}), "resources set")

    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for name, var in (("webhook", "IMGGO__SERVER__BIND"), ("api", "IMGGO__API__BIND"),
                      ("metrics", "IMGGO__ADMIN__BIND")):
        bind = env.get(var, "")
        need(bind.startswith("0.0.0.0:"), f"{var} must listen on all pod addresses")
        need(name in ports and bind.endswith(f":{ports.get(name)}"),
             f"{var}={bind} must match container port {name}")

    def probe(kind, path):
        p = c.get(kind, {}).get("httpGet", {})
        need(p.get("path") == path and p.get("port") == "webhook", f"{kind} on /{path.lstrip('/')} of the webhook port")

    probe("livenessProbe", "/healthz")
    probe("readinessProbe", "/readyz")
    probe("startupProbe", "/healthz")

    shutdown = duration_secs(default_setting("server", "shutdown_timeout"))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    # 5 s: the batch writers' final commit after the drain (startup.rs).
    need(grace > shutdown + pre_stop + 5,
         f"terminationGracePeriodSeconds {grace} must exceed shutdown_timeout {shutdown}s + preStop {pre_stop}s + 5s")

    # Secrets as files, each *_FILE inside the mounted secret volume.
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_mounts = [m for n, m in mounts.items() if "secret" in volumes.get(n, {})]
    need(len(secret_mounts) == 1 and secret_mounts[0].get("readOnly") is True, "one read-only secret mount")
    for var in ("IMGGO_WEBHOOK_SECRETS", "IMGGO_ENCRYPTION_KEYS", "IMGGO_HASH_KEY", "DATABASE_URL"):
        need(var not in env, f"{var} must come from a file, not the manifest")
        path = env.get(f"{var}_FILE", "")
        if need(path, f"{var}_FILE must be set") and secret_mounts:
            base = secret_mounts[0]["mountPath"].rstrip("/") + "/"
            need(path.startswith(base) and path[len(base):] in secret_keys,
                 f"{var}_FILE={path} must name a key of the generated secret under {base}")

    # The spool on the replica's own claim.
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    spool = env.get("IMGGO__SPOOL__PATH", "")
    spool_mounts = [m for n, m in mounts.items() if n in claims and spool.startswith(m["mountPath"].rstrip("/") + "/")]
    need(spool_mounts, f"IMGGO__SPOOL__PATH={spool} must lie on a volumeClaimTemplates volume")
    need(spec.get("persistentVolumeClaimRetentionPolicy", {}).get("whenScaled") == "Retain",
         "scaling down must keep a replica's spool claim")

    # Services: the API only inside the cluster.
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    need(services.get(spec.get("serviceName"), {}).get("spec", {}).get("clusterIP") == "None",
         "the StatefulSet's serviceName must be a headless Service")
    for s in services.values():
        need(s["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service {s['metadata']['name']} must be ClusterIP")
        need(s["spec"]["selector"].items() <= labels.items(), f"Service {s['metadata']['name']} must select the pods")
        for p in s["spec"]["ports"]:
            need(p.get("targetPort") in ports, f"Service {s['metadata']['name']} targets unknown port {p.get('targetPort')}")
    need(any(p.get("targetPort") == "webhook" for s in services.values() for p in s["spec"]["ports"]),
         "a Service for the webhook port")

    pdbs = by_kind.get("PodDisruptionBudget", [])
    need(pdbs and pdbs[0]["spec"]["selector"]["matchLabels"].items() <= labels.items(), "a PodDisruptionBudget for the pods")

    # NetworkPolicy: each port from namespaces named by namespaceSelector only.
    policies = by_kind.get("NetworkPolicy", [])
    if need(len(policies) == 1, "one NetworkPolicy"):
        np = policies[0]["spec"]
        need(np["podSelector"]["matchLabels"].items() <= labels.items(), "NetworkPolicy must select the pods")
        need(np.get("policyTypes") == ["Ingress"], "NetworkPolicy governs ingress")
        admitted = {}
        for rule in np.get("ingress", []):
            peers = rule.get("from", [])
            need(peers and all(set(p) == {"namespaceSelector"} for p in peers),
                 "every ingress rule admits named namespaces only")
            for p in rule.get("ports", []):
                admitted.setdefault(p["port"], []).append(rule)
        need(set(admitted) == {"webhook", "api", "metrics"}, f"ports admitted: {sorted(map(str, admitted))}")


# ---- Prometheus ---------------------------------------------------------


def check_rules():
    rules = [r for g in yaml.safe_load(open(os.path.join(PROM, "alerts.yml")))["groups"] for r in g["rules"]]
    alerts = [r["alert"] for r in rules if "alert" in r]
    need(len(alerts) == len(set(alerts)), "alert names must be unique")
    for r in rules:
        if "alert" not in r:
            continue
        name = r["alert"]
        need(r.get("labels", {}).get("severity") in ("warning", "critical"), f"{name}: severity warning or critical")
        ann = r.get("annotations", {})
        need(ann.get("summary"), f"{name}: summary annotation")
        need(len(ann.get("runbook", "")) > 80, f"{name}: runbook annotation saying what to do")
    tests = yaml.safe_load(open(os.path.join(PROM, "alerts.test.yml")))
    fires, silent = set(), set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    for name in alerts:
        need(name in fires, f"{name}: no test where it fires")
        need(name in silent, f"{name}: no test where it does not fire")
    for name in (fires | silent) - set(alerts):
        need(False, f"alerts.test.yml tests unknown alert {name}")


def dashboard_exprs(node):
    """Every PromQL query string in a Grafana dashboard."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from dashboard_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v)


def check_dashboard(promtool):
    dash = json.load(open(DASHBOARD))
    ids = [p["id"] for p in dash["panels"]]
    need(len(ids) == len(set(ids)), "dashboard panel ids must be unique")
    for p in dash["panels"]:
        g = p["gridPos"]
        need(g["x"] + g["w"] <= 24, f"panel {p['title']} is wider than the grid")
        if p["type"] == "row":
            continue
        need(p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']}: datasource variable")
        need(p.get("targets"), f"panel {p['title']}: no query")
        for t in p.get("targets", []):
            need(t.get("refId") and t.get("expr"), f"panel {p['title']}: target without refId/expr")
    exprs = [e for e in dashboard_exprs(dash) if "imggo_" in e]
    need(len(exprs) > 10, "dashboard queries found")
    if not promtool:
        print("dashboard PromQL: not checked (no promtool)")
        return
    # promtool parses every expression of a rule file: make each query a
    # recording rule, with Grafana's variables given plausible values.
    subst = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$instance": ".*",
             "$destination": ".*"}
    rules = []
    for i, e in enumerate(exprs):
        if e.startswith("label_values("):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", e)
            need(m, f"unparsable template query {e}")
            e = m.group(1) if m else e
        for k, v in subst.items():
            e = e.replace(k, v)
        need("$" not in e, f"unknown variable in {e}")
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    need(out.returncode == 0, f"dashboard PromQL does not parse:\n{out.stdout}{out.stderr}")


def main():
    promtool = None
    if len(sys.argv) == 3 and sys.argv[1] == "--promtool":
        promtool = sys.argv[2]
    check_kubernetes()
    check_rules()
    check_dashboard(promtool)
    if errors:
        print("deploy kit checks failed:\n- " + "\n- ".join(errors))
        sys.exit(1)
    print("deploy kit checks: ok")


if __name__ == "__main__":
    main()
