#!/usr/bin/env python3
"""Checks the deployment files offline, in a few seconds.

    python3 deploy/check-chart.py

Needs `pip install helm-python-sdk kubernetes-validate` (Helm's Go SDK as a
Python library, and the Kubernetes JSON schemas); no helm binary, cluster or
network.

It lints helm/bucketftp, renders it with several value sets, and validates
every rendered object and every file in deploy/kubernetes/ against the
Kubernetes schemas (strict: unknown fields fail). Custom resources (the
ServiceMonitor, the PrometheusRule) have no schema there and are only
checked to parse. Then it checks what the schemas cannot see:

- the gateway's config.toml, assembled by really running the init
  container's script with /bin/sh in a scratch directory (once per replica
  of a StatefulSet, with the pod name it would have), parses as TOML and
  uses only sections and keys that src/config/ knows (the gateway refuses
  unknown keys at start);
- topology affinity: the load-balancer Service lists exactly the ports of
  server.passive_ports, each unchanged, with client-IP affinity;
- topology perReplica: replica n's config.toml has passive_ports shifted by
  n x width and its own passive_host; its Service publishes exactly that
  range to that pod only; the ranges do not overlap; the control Service
  has only the control port and no affinity; a pod beyond replicaCount, or
  without an ordinal, stops in the init container;
- the NetworkPolicy opens every passive port the pods use;
- terminationGracePeriodSeconds exceeds preStop delay + server.shutdown_grace;
- the pod runs as non-root on a read-only root filesystem, with probes on
  /healthz and /readyz, and mounts what the configuration names;
- values that must be refused are refused;
- monitoring agrees: the job label the ServiceMonitor gives its targets is
  the job every alert rule of the PrometheusRule selects, with and without
  nameOverride; the PrometheusRule's rules are deploy/monitoring/alerts.yaml's
  (the chart's files/alerts.yaml is an identical copy);
- a value set that writes keys src/config/ does not know yet (NEEDS_KEYS:
  the chart can land before the gateway side of a feature) is skipped with
  a notice naming the keys, and checked as soon as the gateway has them;
- when a bucketftp binary is at hand ($BUCKETFTP_BIN, target/release or
  target/debug; it is never built here), `bucketftp check-config` accepts
  every assembled config.toml and the image's deploy/config.toml.

Exits 1 naming every failed check, 2 when a tool is missing.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as err:
    print(
        f"check-chart: {err}; install the tools with: "
        "pip install helm-python-sdk kubernetes-validate",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "bucketftp"
MANIFESTS = ROOT / "deploy" / "kubernetes"
IMAGE_CONFIG = ROOT / "deploy" / "config.toml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CONFIG_DIR = ROOT / "src" / "config"

# The oldest Kubernetes release still commonly run; the schemas ship with
# kubernetes-validate.
KUBE_VERSION = "1.30"
# Kinds without a schema in kubernetes-validate: parsed, not validated.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# The alert rules, and the chart's copy of them (Helm reads files inside the
# chart only).
ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yaml"
CHART_ALERTS = CHART / "files" / "alerts.yaml"
# The job name the rules are written for (deploy/monitoring/README.md).
ALERTS_JOB = "bucketftp"
# The sections the gateway's config.toml may have (the brief of issue
# "Kubernetes: ..."; src/config/ is checked to agree).
SECTIONS = {"server", "http", "log", "storage", "tls", "auth", "events", "users"}
RELEASE, NAMESPACE = "ftp", "files"

# A syntactically valid PHC string; no password hashes to it.
SAMPLE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
SAMPLE_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SAMPLE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"

# Value sets the chart must render. Each name is reported on failure.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tls": {
        "passiveHost": "203.0.113.10",
        "users": [
            {
                "name": "camera1",
                "password_hash": SAMPLE_HASH,
                "home": "/cameras/1",
                "permissions": ["list", "write", "mkdir"],
                "allowed_ips": ["203.0.113.0/24", "2001:db8::/32"],
                "tls_required": True,
            }
        ],
        "tls": {"enabled": True, "required": "all", "cert": SAMPLE_PEM, "key": SAMPLE_KEY},
    },
    # Implicit FTPS published on 990, the pods listening unprivileged.
    "implicit-ftps": {
        "tls": {
            "enabled": True,
            "cert": SAMPLE_PEM,
            "key": SAMPLE_KEY,
            "requireCloseNotify": False,
            "implicit": {"enabled": True, "port": 990},
        },
        "networkPolicy": {"enabled": True},
    },
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        },
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
        },
    },
    # The job follows nameOverride; the rules must follow the job.
    "monitoring-renamed": {
        "nameOverride": "files-ftp",
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    },
    "existing-secret": {
        "existingSecret": "ftp-accounts",
        "credentials": {"existingSecret": "ftp-cloud"},
        "tls": {"enabled": True, "existingSecret": "ftp-cert"},
        "serviceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftp"}
        },
        "storage": {"url": "s3://bucket/prefix", "options": {"aws_region": "eu-west-1"}},
        "resources": {"limits": {"memory": "3000M"}},
    },
    "custom-range": {
        "passivePorts": {"start": 40000, "end": 40004},
        "passiveHost": "ftp.example.com",
        "shutdownGraceSeconds": 120,
        "preStopSleepSeconds": 0,
        "service": {
            "externalTrafficPolicy": "Cluster",
            "loadBalancerSourceRanges": ["198.51.100.0/24"],
            "allocateLoadBalancerNodePorts": False,
        },
        "server": {"greeting": 'say "hi" \\ héllo <&>', "max_uploads": 0},
        "storage": {
            "url": "gs://bucket/in",
            "options": {"google_bucket": "bucket", "timeout": "2h"},
        },
        "credentials": {"env": {"GOOGLE_SERVICE_ACCOUNT_KEY": '{"type": "service_account"}'}},
        "users": [
            {
                "name": "alice",
                "password_hash": SAMPLE_HASH,
                "storage": "s3://other/alice",
                "storage_options": {"aws_region": "us-east-1"},
                "enabled": False,
            },
            {"name": "bob", "password_hash": SAMPLE_HASH},
        ],
    },
    "nodeport": {
        "service": {"type": "NodePort", "controlNodePort": 30021},
        "passivePorts": {"start": 30100, "end": 30109},
        "persistence": {"existingClaim": "ftp-shared"},
        "auth": {"anonymous": True},
    },
    # Topology perReplica behind a load balancer that hashes every
    # connection (an AWS NLB): one balancer per replica, PROXY protocol v2.
    "per-replica": {
        "topology": "perReplica",
        "replicaCount": 3,
        # The affinity topology's single host: perReplica.passiveHosts wins.
        "passiveHost": "ignored.example.com",
        "perReplica": {
            "passiveHosts": ["ftp-0.example.com", "ftp-1.example.com", "198.51.100.12"],
            "serviceAnnotations": [
                {"service.beta.kubernetes.io/aws-load-balancer-eip-allocations": "eipalloc-0a,eipalloc-0b"},
            ],
        },
        "proxyProtocol": {"enabled": True, "from": ["10.0.0.0/16", "fd00::/8"]},
        "service": {
            "externalTrafficPolicy": "Cluster",
            "annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
            },
        },
        "users": [{"name": "camera1", "password_hash": SAMPLE_HASH, "allowed_ips": ["203.0.113.0/24"]}],
        "networkPolicy": {"enabled": True},
        "storage": {"url": "s3://bucket/in", "options": {"aws_region": "eu-west-1"}},
    },
    # GKE: a reserved static IP per replica Service, which is also each
    # replica's PASV host; no PROXY protocol (passthrough NLB).
    "per-replica-static-ips": {
        "topology": "perReplica",
        "replicaCount": 2,
        "passivePorts": {"start": 40000, "end": 40009},
        "perReplica": {"loadBalancerIPs": ["203.0.113.10", "203.0.113.11"]},
    },
    # One balancer (or node ports) publishing every range: one host for all.
    "per-replica-shared-host": {
        "topology": "perReplica",
        "replicaCount": 2,
        "passivePorts": {"start": 30100, "end": 30104},
        "perReplica": {"passiveHosts": ["ftp.example.com"]},
        "service": {"type": "NodePort"},
        "networkPolicy": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
    },
}

# Value sets that write keys the gateway may not have yet: checked once
# src/config/ knows them, skipped with a notice before (the chart and the
# gateway land separately).
NEEDS_KEYS: dict[str, dict[str, set[str]]] = {
    "per-replica": {"server": {"proxy_protocol", "proxy_protocol_from"}},
}

# Value sets the chart must refuse, with a word the error must contain.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "unknown server key": ({"server": {"listen_addr": "0.0.0.0:21"}}, "listen_addr"),
    "plaintext password": (
        {"users": [{"name": "eve", "password_hash": "hunter2"}]},
        "password_hash",
    ),
    "reversed passive range": ({"passivePorts": {"start": 50010, "end": 50000}}, "passivePorts"),
    "users with existingSecret": (
        {"existingSecret": "x", "users": [{"name": "a", "password_hash": SAMPLE_HASH}]},
        "existingSecret",
    ),
    "tls without certificate": ({"tls": {"enabled": True}}, "tls"),
    "perReplica with autoscaling": (
        {
            "topology": "perReplica",
            "replicaCount": 2,
            "perReplica": {"passiveHosts": ["ftp.example.com"]},
            "autoscaling": {"enabled": True},
        },
        "autoscal",
    ),
    "perReplica with too few hosts": (
        {"topology": "perReplica", "replicaCount": 3, "perReplica": {"passiveHosts": ["a.example.com", "b.example.com"]}},
        "passiveHosts",
    ),
    "perReplica without hosts": ({"topology": "perReplica", "replicaCount": 2}, "passiveHosts"),
    "perReplica with too few addresses": (
        {"topology": "perReplica", "replicaCount": 2, "perReplica": {"loadBalancerIPs": ["203.0.113.10"]}},
        "loadBalancerIPs",
    ),
    "perReplica without replicas": (
        {"topology": "perReplica", "replicaCount": 0, "perReplica": {"passiveHosts": ["ftp.example.com"]}},
        "replicaCount",
    ),
    "perReplica ranges beyond 65535": (
        {
            "topology": "perReplica",
            "replicaCount": 3,
            "passivePorts": {"start": 65500, "end": 65519},
            "perReplica": {"passiveHosts": ["ftp.example.com"]},
        },
        "65535",
    ),
    "unknown topology": ({"topology": "roundRobin"}, "topology"),
    "proxy protocol from a name": ({"proxyProtocol": {"enabled": True, "from": ["lb.example.com"]}}, "from"),
    "fractional memory limit": (
        {"resources": {"limits": {"memory": "1.5Gi"}}},
        "memory_budget",
    ),
}


class Checks:
    """Collects failures instead of stopping at the first one."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []
        # (where, config.toml as the gateway would read it), for check-config.
        self.configs: list[tuple[str, str]] = []

    def check(self, ok: bool, where: str, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{where}: {what}")
        return ok

    def run(self, where: str, step: Callable[[], None]) -> None:
        """Runs a step whose exceptions are failures, not crashes."""
        try:
            step()
        except AssertionError as err:
            self.check(False, where, str(err))
        except (helm.HelmError, yaml.YAMLError, tomllib.TOMLDecodeError, KeyError) as err:
            self.check(False, where, f"{type(err).__name__}: {err}")


# ---------------------------------------------------------------- helpers


def known_keys() -> dict[str, set[str]]:
    """Section -> key names, read from the structs of src/config/ that the
    gateway deserialises (a field's serde `rename`, if any, is its key)."""
    text = "\n".join(p.read_text() for p in sorted(CONFIG_DIR.glob("*.rs")))
    structs: dict[str, set[str]] = {}
    for name, body in re.findall(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
        fields: set[str] = set()
        rename = None
        for line in body.splitlines():
            found = re.search(r'rename = "(\w+)"', line)
            if found:
                rename = found.group(1)
            field = re.match(r"\s*pub (\w+):", line)
            if field:
                fields.add(rename or field.group(1))
                rename = None
        structs[name] = fields
    sections = structs.get("Config", set())
    assert sections == SECTIONS, (
        f"src/config/ Config has sections {sorted(sections)}, expected {sorted(SECTIONS)}"
    )
    by_section = {s: structs.get(f"{s.capitalize()}Config", set()) for s in sections}
    by_section["users"] = structs.get("UserConfig", set())
    assert all(by_section.values()), "cannot read the section structs of src/config/"
    return by_section


def duration_seconds(text: str) -> float:
    """The subset of humantime the deployment files use: 30s, 2m, 1h 30m."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]+)", text)
    assert parts and all(u in units for _, u in parts), f"unreadable duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def parse_docs(text: str, where: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{where}: a YAML document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{where}: no apiVersion/kind"
        assert doc.get("metadata", {}).get("name"), f"{where}: {doc['kind']} without a name"
    return docs


def validate_schema(checks: Checks, doc: dict[str, Any], where: str) -> None:
    kind = f"{doc['kind']}/{doc['metadata']['name']}"
    if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
        checks.check(isinstance(doc.get("spec"), dict), where, f"{kind} has no spec")
        return
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checks.check(True, where, kind)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path)
        checks.check(False, where, f"{kind} invalid at {path or '<root>'}: {err.message}")
    except kubernetes_validate.SchemaNotFoundError:
        checks.check(False, where, f"{kind}: no Kubernetes {KUBE_VERSION} schema for {doc['apiVersion']}")


def one(docs: list[dict[str, Any]], kind: str, where: str, pred=lambda d: True) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and pred(d)]
    assert len(found) == 1, f"{where}: expected one {kind}, found {len(found)}"
    return found[0]


def secret_text(secret: dict[str, Any], key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return secret["stringData"][key]
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def check_config(checks: Checks, config: dict[str, Any], keys: dict[str, set[str]], where: str) -> None:
    extra = set(config) - SECTIONS
    checks.check(not extra, where, f"config.toml has unknown sections {sorted(extra)}")
    for section, value in config.items():
        if section not in SECTIONS:
            continue
        entries = value if section == "users" else [value]
        for entry in entries:
            unknown = set(entry) - keys[section]
            checks.check(not unknown, where, f"[{section}] has keys the gateway refuses: {sorted(unknown)}")
    for user in config.get("users", []):
        checks.check(
            {"name", "password_hash"} <= set(user), where, "a [[users]] entry lacks name or password_hash"
        )


# ---------------------------------------------------------------- semantics


def check_objects(
    checks: Checks,
    docs: list[dict[str, Any]],
    keys: dict[str, set[str]],
    where: str,
    external: frozenset[str] = frozenset(),
) -> None:
    """What the schemas cannot see, for a rendered chart or the plain files.

    `external` names the Secrets the operator brings (existingSecret).
    """
    deploy = workload(docs, where)
    pod = deploy["spec"]["template"]["spec"]
    main = next(c for c in pod["containers"] if c["name"] == "bucketftp")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
    init = next(c for c in pod.get("initContainers", []) if c["name"] == "assemble-config")

    # The config.toml each pod reads, made by its init container's script.
    settings_map = volumes["settings"]["configMap"]["name"]
    settings = one(docs, "ConfigMap", where, lambda d: d["metadata"]["name"] == settings_map)
    users_secret_name = volumes["users"]["secret"]["secretName"]
    users_secrets = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == users_secret_name
    ]
    users_toml = secret_text(users_secrets[0], "users.toml") if users_secrets else ""
    checks.check(users_toml is not None, where, f"Secret {users_secret_name} has no users.toml")
    parts = {"settings": settings["data"], "users": {"users.toml": users_toml or ""}}
    configs: dict[str, dict[str, Any]] = {}
    for pod_name in pod_names(deploy):
        text = run_init(init, parts, pod_name, where)
        config = tomllib.loads(text)
        check_config(checks, config, keys, f"{where} {pod_name}")
        checks.configs.append((f"{where} {pod_name}", text))
        configs[pod_name] = config
    if deploy["kind"] == "StatefulSet":
        check_init_refuses(checks, init, parts, deploy, where)
    # What every pod shares; the passive keys are checked per pod below.
    config = next(iter(configs.values()))

    env = {e["name"]: e.get("value") for e in main.get("env", [])}
    config_path = env.get("BUCKETFTP_CONFIG", "/etc/bucketftp/config.toml")
    checks.check(
        mounts.get(str(Path(config_path).parent)) == "config",
        where,
        f"BUCKETFTP_CONFIG {config_path} is not on the assembled config volume",
    )
    checks.check(config_path in " ".join(init["command"]), where, "the init container does not write BUCKETFTP_CONFIG")

    # Ports: the container's named ports are those of the configuration.
    server = config.get("server", {})
    ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
    checks.check(
        server.get("listen", "").endswith(f":{ports.get('ftp')}"), where, "server.listen and port ftp differ"
    )
    checks.check(
        config.get("http", {}).get("listen", "").endswith(f":{ports.get('http')}"),
        where,
        "http.listen and port http differ",
    )
    checks.check(config.get("log", {}).get("format") == "json", where, "log.format is not json")
    if deploy["kind"] == "StatefulSet":
        check_per_replica_services(checks, docs, deploy, configs, ports, where)
    else:
        check_affinity_service(checks, docs, deploy, server, ports, where)
    check_network_policy(checks, docs, configs, where)

    # Shutdown: Kubernetes must not kill the pod inside the drain.
    grace = duration_seconds(server.get("shutdown_grace", "30s"))
    pre_stop = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    delay = int(pre_stop[-1]) if pre_stop and pre_stop[0].endswith("sleep") else 0
    termination = pod.get("terminationGracePeriodSeconds", 30)
    checks.check(
        termination > grace + delay,
        where,
        f"terminationGracePeriodSeconds {termination} <= preStop {delay}s + shutdown_grace {grace:g}s",
    )

    # Hardening and probes.
    pod_sc, sc = pod.get("securityContext", {}), main.get("securityContext", {})
    checks.check(pod_sc.get("runAsNonRoot") is True, where, "runAsNonRoot is not set")
    checks.check(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "seccomp is not RuntimeDefault")
    for c in [main, init]:
        csc = c.get("securityContext", {})
        checks.check(csc.get("readOnlyRootFilesystem") is True, where, f"{c['name']}: root filesystem is writable")
        checks.check(csc.get("capabilities", {}).get("drop") == ["ALL"], where, f"{c['name']}: capabilities not dropped")
        checks.check(csc.get("allowPrivilegeEscalation") is False, where, f"{c['name']}: privilege escalation allowed")
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = main.get(probe, {}).get("httpGet", {})
        checks.check(
            get.get("path") == path and get.get("port") in ("http", ports.get("http")),
            where,
            f"{probe} is not GET {path} on the http port",
        )
    checks.check("/data" in mounts, where, "/data (file:// storage) is not mounted")

    # TLS files are mounted where [tls] says.
    if "tls" in config:
        for key in ("cert", "key"):
            directory = str(Path(config["tls"][key]).parent)
            volume = volumes.get(mounts.get(directory, ""), {})
            checks.check("secret" in volume, where, f"tls.{key} {config['tls'][key]} is not on a Secret volume")

    # The objects that point at each other agree.
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    wanted = [("ConfigMap", v["configMap"]["name"]) for v in volumes.values() if "configMap" in v]
    wanted += [("Secret", v["secret"]["secretName"]) for v in volumes.values() if "secret" in v]
    wanted += [("Secret", e["secretRef"]["name"]) for e in main.get("envFrom", []) if "secretRef" in e]
    for kind, name in wanted:
        checks.check(
            (kind, name) in present or name in external, where, f"the pod names {kind} {name}, which is not among the objects"
        )
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for pdb in pdbs:
        checks.check(
            pdb["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items(),
            where,
            "the PodDisruptionBudget does not select the pods",
        )
    for hpa in [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]:
        target = hpa["spec"]["scaleTargetRef"]
        checks.check(
            (target["kind"], target["name"]) == (deploy["kind"], deploy["metadata"]["name"]), where, "HPA targets another workload"
        )
        checks.check("replicas" not in deploy["spec"], where, "Deployment sets replicas although an HPA scales it")
    for monitor in [d for d in docs if d["kind"] == "ServiceMonitor"]:
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        selected = [d for d in docs if d["kind"] == "Service" and wanted <= d["metadata"].get("labels", {}).items()]
        checks.check(len(selected) == 1, where, f"the ServiceMonitor selects {len(selected)} Services, not 1")
        names = {p["port"] for p in monitor["spec"]["endpoints"]}
        checks.check(
            bool(selected) and names <= {p.get("name") for p in selected[0]["spec"]["ports"]},
            where,
            "the ServiceMonitor names a port the metrics Service lacks",
        )
    account = pod.get("serviceAccountName")
    if any(d["kind"] == "ServiceAccount" for d in docs):
        checks.check(
            any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account for d in docs),
            where,
            f"serviceAccountName {account} is not among the objects",
        )


# ---------------------------------------------------------------- workloads


def workload(docs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The Deployment (topology affinity) or StatefulSet (perReplica)."""
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, f"{where}: expected one Deployment or StatefulSet, found {len(found)}"
    return found[0]


def pod_names(deploy: dict[str, Any]) -> list[str]:
    """The names the workload's pods get: NAME-0 … NAME-(n-1) for a
    StatefulSet (the init container reads its ordinal from it), one sample
    name for a Deployment (whose pods are all alike)."""
    name = deploy["metadata"]["name"]
    if deploy["kind"] == "StatefulSet":
        return [f"{name}-{n}" for n in range(deploy["spec"]["replicas"])]
    return [f"{name}-6d4cf56db6-x7k2p"]


def init_script(init: dict[str, Any], scratch: Path) -> list[str]:
    """The init container's command, its pod paths moved into `scratch`."""
    command = init["command"]
    assert command[:2] == ["/bin/sh", "-ec"] and len(command) == 3, f"unexpected init command {command[:2]}"
    script = command[2].replace("/etc/bucketftp-parts", f"{scratch}/parts")
    script = script.replace("/etc/bucketftp/", f"{scratch}/out/")
    assert "/etc/bucketftp" not in script, "the init script uses a path this check does not know"
    return ["/bin/sh", "-ec", script]


def exec_init(init: dict[str, Any], parts: dict[str, dict[str, str]], pod_name: str) -> tuple[int, str, str]:
    """Runs the init container's script with /bin/sh as the pod `pod_name`
    would (POD_NAME and HOSTNAME set, the ConfigMap and Secret as files);
    returns (exit code, config.toml or "", stderr)."""
    with tempfile.TemporaryDirectory(prefix="check-chart-init-") as tmp:
        scratch = Path(tmp)
        for volume, files in parts.items():
            (scratch / "parts" / volume).mkdir(parents=True)
            for name, text in files.items():
                (scratch / "parts" / volume / name).write_text(text)
        (scratch / "out").mkdir()
        env = {"PATH": "/usr/bin:/bin", "HOSTNAME": pod_name}
        for item in init.get("env", []):
            field = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field == "metadata.name":
                env[item["name"]] = pod_name
            elif "value" in item:
                env[item["name"]] = item["value"]
        result = subprocess.run(
            init_script(init, scratch), env=env, cwd=scratch, capture_output=True, text=True, timeout=30
        )
        out = scratch / "out" / "config.toml"
        return result.returncode, out.read_text() if out.is_file() else "", result.stderr


def run_init(init: dict[str, Any], parts: dict[str, dict[str, str]], pod_name: str, where: str) -> str:
    code, text, stderr = exec_init(init, parts, pod_name)
    assert code == 0, f"the init container fails for pod {pod_name}: {stderr.strip()}"
    assert "@PASSIVE_" not in text, f"pod {pod_name} keeps a placeholder in config.toml"
    return text


def check_init_refuses(
    checks: Checks, init: dict[str, Any], parts: dict[str, dict[str, str]], deploy: dict[str, Any], where: str
) -> None:
    """A StatefulSet pod with no line in the table (scaled past replicaCount
    with kubectl) or no ordinal must stop in the init container, with a
    message, and not start with a half-made config."""
    name = deploy["metadata"]["name"]
    for pod_name, word in [(f"{name}-{deploy['spec']['replicas']}", "no passive range"), (f"{name}-x", "ordinal")]:
        code, text, stderr = exec_init(init, parts, pod_name)
        checks.check(
            code != 0 and word in stderr and not text,
            where,
            f"the init container of pod {pod_name} does not stop with {word!r} (exit {code}, {stderr.strip()!r})",
        )


def passive_range(server: dict[str, Any]) -> tuple[int, int]:
    low, high = (int(p) for p in server["passive_ports"].split("-"))
    return low, high


def selects(service: dict[str, Any], deploy: dict[str, Any]) -> bool:
    """The Service's selector matches the pod template's labels (the pod-name
    label is added by the StatefulSet controller to each pod)."""
    selector = {k: v for k, v in service["spec"]["selector"].items() if k != "statefulset.kubernetes.io/pod-name"}
    return set(selector.items()) <= set(deploy["spec"]["template"]["metadata"]["labels"].items())


def check_affinity_service(
    checks: Checks, docs: list[dict[str, Any]], deploy: dict[str, Any], server: dict[str, Any], ports: dict[str, int], where: str
) -> None:
    """Topology affinity: one Service, every pod's one range, ClientIP affinity."""
    low, high = passive_range(server)
    passive = set(range(low, high + 1))

    # The Service lists exactly the passive range, unchanged, with affinity.
    service = one(docs, "Service", where, lambda d: d["spec"].get("type") in ("LoadBalancer", "NodePort"))
    spec = service["spec"]
    # Besides the passive range: the control port and implicit FTPS.
    listed = [p for p in spec["ports"] if p["name"] not in ("ftp", "ftps")]
    numbers = [p["port"] for p in listed]
    checks.check(
        sorted(numbers) == sorted(passive) and len(numbers) == len(passive),
        where,
        f"Service passive ports {numbers[:3]}... ({len(numbers)}) are not exactly {low}-{high}",
    )
    checks.check(
        all(p["targetPort"] == p["port"] and p.get("protocol", "TCP") == "TCP" for p in listed),
        where,
        "a passive Service port is remapped (the PASV reply names the pod's port)",
    )
    if spec["type"] == "NodePort":
        checks.check(all(p.get("nodePort") == p["port"] for p in listed), where, "NodePort passive ports must keep their number")
    control = next((p for p in spec["ports"] if p["name"] == "ftp"), None)
    checks.check(control is not None and control["targetPort"] in ("ftp", ports.get("ftp")), where, "no control port to ftp")
    checks.check(spec.get("sessionAffinity") == "ClientIP", where, "Service sessionAffinity is not ClientIP")
    timeout = spec.get("sessionAffinityConfig", {}).get("clientIP", {}).get("timeoutSeconds")
    checks.check(isinstance(timeout, int) and timeout > 0, where, "no sessionAffinity timeout")
    checks.check(
        set(spec["selector"].items()) <= set(deploy["spec"]["template"]["metadata"]["labels"].items()),
        where,
        "the Service does not select the pods",
    )


def check_per_replica_services(
    checks: Checks,
    docs: list[dict[str, Any]],
    sts: dict[str, Any],
    configs: dict[str, dict[str, Any]],
    ports: dict[str, int],
    where: str,
) -> None:
    """Topology perReplica: pod NAME-n serves passivePorts shifted by n x
    width, published by the Service NAME-n to that pod only; the control
    Service has the control port only and no affinity."""
    ranges = {pod: passive_range(config["server"]) for pod, config in configs.items()}
    first_low, first_high = ranges[f"{sts['metadata']['name']}-0"]
    width = first_high - first_low + 1
    taken: dict[int, str] = {}
    for n, (pod, (low, high)) in enumerate(ranges.items()):
        checks.check(
            (low, high) == (first_low + n * width, first_low + (n + 1) * width - 1),
            where,
            f"pod {pod} has passive_ports {low}-{high}, not the range shifted by {n} x {width}",
        )
        for port in range(low, high + 1):
            checks.check(port not in taken, where, f"port {port} is in the ranges of {taken.get(port)} and {pod}")
            taken[port] = pod
        service = next((d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == pod), None)
        if not checks.check(service is not None, where, f"no Service {pod} for the range of pod {pod}"):
            continue
        spec = service["spec"]
        listed = [p["port"] for p in spec["ports"]]
        checks.check(
            listed == list(range(low, high + 1)),
            where,
            f"Service {pod} publishes {listed[:3]}... ({len(listed)}), not exactly {low}-{high}",
        )
        checks.check(
            all(p["targetPort"] == p["port"] and p.get("protocol", "TCP") == "TCP" for p in spec["ports"]),
            where,
            f"Service {pod} remaps a passive port (the PASV reply names the pod's port)",
        )
        if spec.get("type") == "NodePort":
            checks.check(all(p.get("nodePort") == p["port"] for p in spec["ports"]), where, f"Service {pod}: NodePort passive ports must keep their number")
        checks.check(
            spec["selector"].get("statefulset.kubernetes.io/pod-name") == pod and selects(service, sts),
            where,
            f"Service {pod} does not select pod {pod} alone",
        )
        checks.check(spec.get("sessionAffinity", "None") == "None", where, f"Service {pod} has session affinity")
    passive_services = [
        d for d in docs if d["kind"] == "Service" and "statefulset.kubernetes.io/pod-name" in d["spec"].get("selector", {})
    ]
    checks.check(
        len(passive_services) == len(configs),
        where,
        f"{len(passive_services)} per-replica Services for {len(configs)} replicas",
    )
    control = [
        d
        for d in docs
        if d["kind"] == "Service" and any(p.get("targetPort") in ("ftp", ports.get("ftp")) for p in d["spec"]["ports"])
        and d["spec"].get("clusterIP") != "None"
    ]
    checks.check(len(control) == 1, where, f"{len(control)} control Services, expected 1")
    for service in control:
        spec = service["spec"]
        checks.check(
            [p["name"] for p in spec["ports"]] == ["ftp"], where, "the control Service publishes more than the control port"
        )
        checks.check(spec.get("sessionAffinity", "None") == "None", where, "the control Service has session affinity")
        checks.check(
            "statefulset.kubernetes.io/pod-name" not in spec["selector"] and selects(service, sts),
            where,
            "the control Service does not select every replica",
        )
    governing = sts["spec"].get("serviceName")
    checks.check(
        any(d["kind"] == "Service" and d["metadata"]["name"] == governing and d["spec"].get("clusterIP") == "None" for d in docs),
        where,
        f"the StatefulSet's serviceName {governing} is not a headless Service among the objects",
    )


def check_network_policy(
    checks: Checks, docs: list[dict[str, Any]], configs: dict[str, dict[str, Any]], where: str
) -> None:
    """A NetworkPolicy, when rendered, opens every pod's passive ports."""
    for policy in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        opened = set()
        for rule in policy["spec"].get("ingress", []):
            if "from" in rule:
                continue
            for port in rule.get("ports", []):
                opened.update(range(port["port"], port.get("endPort", port["port"]) + 1))
        for pod, config in configs.items():
            low, high = passive_range(config["server"])
            checks.check(
                set(range(low, high + 1)) <= opened, where, f"the NetworkPolicy does not open {pod}'s passive ports {low}-{high}"
            )


JOB_MATCHER = re.compile(r'\bjob\s*(=~|!~|!=|=)\s*"([^"]*)"')


def monitor_job(monitor: dict[str, Any], docs: list[dict[str, Any]]) -> str:
    """The job label Prometheus Operator gives a ServiceMonitor's targets:
    the value of the Service label named by spec.jobLabel, else the
    Service's name."""
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    services = [d for d in docs if d["kind"] == "Service" and wanted <= d["metadata"].get("labels", {}).items()]
    assert len(services) == 1, f"the ServiceMonitor selects {len(services)} Services"
    service = services[0]
    label = monitor["spec"].get("jobLabel")
    if label:
        value = service["metadata"].get("labels", {}).get(label)
        assert value, f"jobLabel {label} is not a label of Service {service['metadata']['name']}"
        return value
    return service["metadata"]["name"]


def check_monitoring(checks: Checks, docs: list[dict[str, Any]], where: str) -> None:
    """The ServiceMonitor's job is the job every alert rule selects, and the
    PrometheusRule carries deploy/monitoring/alerts.yaml's rules."""
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if not rules:
        return
    checks.check(len(monitors) == 1, where, "a PrometheusRule without exactly one ServiceMonitor")
    if len(monitors) != 1:
        return
    job = monitor_job(monitors[0], docs)
    selecting = 0
    for doc in rules:
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                matchers = JOB_MATCHER.findall(rule["expr"])
                selecting += bool(matchers)
                for op, value in matchers:
                    checks.check(
                        op == "=" and value == job,
                        where,
                        f"rule {name} selects job{op}\"{value}\", the ServiceMonitor's targets have job=\"{job}\"",
                    )
                if re.search(r"\bup\b", rule["expr"]):
                    checks.check(bool(matchers), where, f"rule {name} reads up without selecting the job")
        expected = yaml.safe_load(ALERTS.read_text().replace(f'job="{ALERTS_JOB}"', f'job="{job}"'))
        checks.check(
            doc["spec"]["groups"] == expected["groups"],
            where,
            "the PrometheusRule's groups are not deploy/monitoring/alerts.yaml's",
        )
    checks.check(selecting > 0, where, "no alert rule selects a job: nothing ties the rules to the ServiceMonitor")


# ---------------------------------------------------------------- runs


def check_chart(checks: Checks, keys: dict[str, set[str]]) -> None:
    checks.check(
        CHART_ALERTS.read_bytes() == ALERTS.read_bytes(),
        "helm/bucketftp/files/alerts.yaml",
        f"differs from deploy/monitoring/alerts.yaml: cp {ALERTS.relative_to(ROOT)} {CHART_ALERTS.relative_to(ROOT)}",
    )
    report = helm.lint(str(CHART), strict=True)
    for message in report.get("messages", []):
        checks.check(message["severity"] < 2, "helm lint", f"{message['path']}: {message['error'].strip()}")
    checks.check(not report.get("errors"), "helm lint", "; ".join(report.get("errors", [])))

    with helm.Chart.load(str(CHART)) as chart:
        meta = chart.metadata
        checks.check(
            meta.get("apiVersion") == "v2" and meta.get("version") == "0.1.0" and meta.get("appVersion") == "0.1.0",
            "Chart.yaml",
            "expected apiVersion v2, version 0.1.0, appVersion 0.1.0",
        )
        for name, values in VALUE_SETS.items():
            where = f"chart[{name}]"
            missing = sorted(
                f"{section}.{key}" for section, wanted in NEEDS_KEYS.get(name, {}).items() for key in wanted - keys[section]
            )
            if missing:
                print(f"check-chart: src/config/ has no {', '.join(missing)} yet: skipping value set {name}")
                continue

            def render(values=values, where=where) -> None:
                lint = helm.lint(str(CHART), values, strict=True)
                checks.check(not lint.get("errors"), where, "helm lint: " + "; ".join(lint.get("errors", [])))
                rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
                docs: list[dict[str, Any]] = []
                for path, text in sorted(rendered.items()):
                    if path.endswith("NOTES.txt"):
                        checks.check(bool(text.strip()), where, "NOTES.txt is empty")
                        continue
                    docs += parse_docs(text, f"{where} {path}")
                for doc in docs:
                    validate_schema(checks, doc, where)
                external = frozenset(
                    n
                    for n in (
                        values.get("existingSecret"),
                        values.get("credentials", {}).get("existingSecret"),
                        values.get("tls", {}).get("existingSecret"),
                    )
                    if n
                )
                check_objects(checks, docs, keys, where, external)
                check_expectations(checks, name, values, docs, where)
                check_monitoring(checks, docs, where)

            checks.run(where, render)

        for name, (values, word) in REFUSED.items():
            where = f"chart refuses {name}"
            try:
                chart.render(values, name=RELEASE, namespace=NAMESPACE)
                checks.check(False, where, "rendered without error")
            except helm.HelmError as err:
                checks.check(word in str(err), where, f"error does not mention {word!r}: {err}")


def check_expectations(checks: Checks, name: str, values: dict[str, Any], docs: list[dict[str, Any]], where: str) -> None:
    """Per value set: the switches did what they say."""
    kinds = {d["kind"] for d in docs}
    deploy = workload(docs, where)
    pod = deploy["spec"]["template"]["spec"]
    checks.check(
        deploy["kind"] == ("StatefulSet" if values.get("topology") == "perReplica" else "Deployment"),
        where,
        f"topology {values.get('topology', 'affinity')} rendered a {deploy['kind']}",
    )
    monitoring = {"ServiceMonitor", "PrometheusRule"}
    if name.startswith("monitoring"):
        checks.check(monitoring <= kinds, where, "ServiceMonitor or PrometheusRule missing")
    else:
        checks.check(not monitoring & kinds, where, "ServiceMonitor/PrometheusRule rendered while off")
    if name == "monitoring":
        checks.check("HorizontalPodAutoscaler" in kinds, where, "HPA missing")
    else:
        checks.check("HorizontalPodAutoscaler" not in kinds, where, "HPA rendered while off")
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    if name == "existing-secret":
        checks.check(not secrets, where, f"Secrets rendered although existing ones are named: {sorted(secrets)}")
        volumes = {v["name"]: v for v in pod["volumes"]}
        checks.check(volumes["users"]["secret"]["secretName"] == "ftp-accounts", where, "users not read from existingSecret")
        checks.check(volumes["tls"]["secret"]["secretName"] == "ftp-cert", where, "TLS not read from tls.existingSecret")
        sources = [e["secretRef"]["name"] for e in pod["containers"][0].get("envFrom", [])]
        checks.check(sources == ["ftp-cloud"], where, f"credentials envFrom is {sources}")
        account = one(docs, "ServiceAccount", where)
        checks.check("eks.amazonaws.com/role-arn" in account["metadata"].get("annotations", {}), where, "IRSA annotation lost")
    if name == "implicit-ftps":
        config = tomllib.loads(one(docs, "ConfigMap", where)["data"]["config.toml"])
        checks.check(config["tls"].get("implicit_listen") == "0.0.0.0:9990", where, "tls.implicit_listen not written")
        checks.check(config["tls"].get("require_close_notify") is False, where, "tls.require_close_notify not written")
        ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
        checks.check(ports.get("ftps") == 9990, where, f"no ftps container port: {ports}")
        service = one(docs, "Service", where, lambda d: d["spec"]["type"] == "LoadBalancer")
        published = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        checks.check(published.get("ftps") == (990, "ftps"), where, f"implicit FTPS not on the Service: {published.get('ftps')}")
        policy = one(docs, "NetworkPolicy", where)
        allowed = {p.get("port") for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
        checks.check(9990 in allowed, where, "NetworkPolicy does not admit implicit FTPS")
    elif "tls" in values:
        config = tomllib.loads(one(docs, "ConfigMap", where)["data"]["config.toml"])
        checks.check("implicit_listen" not in config.get("tls", {}), where, "implicit FTPS on although off")
    if name == "custom-range":
        config = tomllib.loads(one(docs, "ConfigMap", where)["data"]["config.toml"])
        checks.check(config["server"]["passive_ports"] == "40000-40004", where, "custom passive range not written")
        checks.check(config["server"]["passive_host"] == "ftp.example.com", where, "passiveHost not written")
        checks.check(config["server"]["greeting"] == values["server"]["greeting"], where, "greeting not escaped faithfully")
        checks.check(pod["terminationGracePeriodSeconds"] == 130, where, "terminationGracePeriodSeconds is not grace + 10 without preStop")
        service = one(docs, "Service", where, lambda d: d["spec"]["type"] == "LoadBalancer")
        checks.check(service["spec"]["externalTrafficPolicy"] == "Cluster", where, "externalTrafficPolicy not configurable")
    if values.get("topology") == "perReplica":
        check_per_replica_values(checks, values, docs, deploy, where)
    else:
        settings = tomllib.loads(one(docs, "ConfigMap", where)["data"]["config.toml"])
        checks.check(
            settings["server"].get("proxy_protocol", False) == values.get("proxyProtocol", {}).get("enabled", False),
            where,
            "server.proxy_protocol is not proxyProtocol.enabled",
        )
    budget = tomllib.loads(one(docs, "ConfigMap", where)["data"]["config.toml"])["storage"].get("memory_budget")
    if name == "defaults":
        # The memory budget is half the 1Gi limit (issue #18), not a count
        # of uploads tuned by hand.
        checks.check(budget == "512MiB", where, f"memory_budget {budget!r} is not half the 1Gi limit")
    if name == "existing-secret":
        checks.check(budget == "1500000000", where, f"memory_budget {budget!r} is not half of 3000M")
    if name == "defaults":
        checks.check(pod["terminationGracePeriodSeconds"] == 45, where, "default terminationGracePeriodSeconds is not 30 + 15")
        checks.check(
            deploy["spec"].get("replicas") == 1,
            where,
            "default replicaCount is not 1 (the only count safe behind every load balancer)",
        )


def check_per_replica_values(
    checks: Checks, values: dict[str, Any], docs: list[dict[str, Any]], sts: dict[str, Any], where: str
) -> None:
    """perReplica: the values reached each replica's config.toml and Service."""
    replicas = values["replicaCount"]
    checks.check(sts["spec"].get("replicas") == replicas, where, f"StatefulSet replicas is not replicaCount {replicas}")
    start = values.get("passivePorts", {}).get("start", 50000)
    hosts = values["perReplica"].get("passiveHosts") or values["perReplica"].get("loadBalancerIPs")
    ips = values["perReplica"].get("loadBalancerIPs", [])
    proxy = values.get("proxyProtocol", {})
    by_pod = {pod.split(" ")[-1]: tomllib.loads(text) for pod, text in checks.configs if pod.startswith(where + " ")}
    name = sts["metadata"]["name"]
    annotations = values.get("perReplica", {}).get("serviceAnnotations", [])
    common = values.get("service", {}).get("annotations", {})
    for n in range(replicas):
        server = by_pod[f"{name}-{n}"]["server"]
        checks.check(
            passive_range(server)[0] == start + n * (passive_range(by_pod[f"{name}-0"]["server"])[1] - start + 1),
            where,
            f"replica {n}'s range does not start at passivePorts.start + {n} x width",
        )
        wanted = hosts[n] if len(hosts) > 1 else hosts[0]
        checks.check(server["passive_host"] == wanted, where, f"replica {n} has passive_host {server['passive_host']}, not {wanted}")
        checks.check(server.get("proxy_protocol", False) == proxy.get("enabled", False), where, f"replica {n}: proxy_protocol is not proxyProtocol.enabled")
        if proxy.get("enabled"):
            checks.check(server.get("proxy_protocol_from") == proxy.get("from", []), where, f"replica {n}: proxy_protocol_from is not proxyProtocol.from")
        service = one(docs, "Service", where, lambda d, pod=f"{name}-{n}": d["metadata"]["name"] == pod)
        checks.check(
            service["spec"].get("loadBalancerIP") == (ips[n] if ips else None),
            where,
            f"Service {name}-{n} does not have loadBalancerIP {ips[n] if ips else None}",
        )
        own = annotations[n] if n < len(annotations) and annotations[n] else {}
        checks.check(
            service["metadata"].get("annotations", {}) == {**common, **own},
            where,
            f"Service {name}-{n} does not carry service.annotations and its own perReplica.serviceAnnotations",
        )
    control = one(docs, "Service", where, lambda d: d["metadata"]["name"] == name)
    checks.check(control["metadata"].get("annotations", {}) == common, where, "the control Service lacks service.annotations")


def check_manifests(checks: Checks, keys: dict[str, set[str]]) -> None:
    files = sorted(MANIFESTS.glob("*.yaml")) + sorted(MANIFESTS.glob("*.yml"))
    checks.check(bool(files), "deploy/kubernetes", "no manifests found")
    docs: list[dict[str, Any]] = []
    for path in files:
        where = f"deploy/kubernetes/{path.name}"

        def load(path=path, where=where) -> None:
            found = parse_docs(path.read_text(), where)
            for doc in found:
                checks.check("namespace" not in doc["metadata"], where, "manifests must not fix a namespace")
                validate_schema(checks, doc, where)
            docs.extend(found)

        checks.run(where, load)
    checks.run("deploy/kubernetes", lambda: check_objects(checks, docs, keys, "deploy/kubernetes"))
    checks.run(
        "deploy/kubernetes",
        lambda: checks.check(
            one(docs, "Deployment", "deploy/kubernetes")["spec"]["replicas"] == 1,
            "deploy/kubernetes",
            "the Deployment should run 1 replica (safe behind any load balancer)",
        ),
    )


def check_image(checks: Checks, keys: dict[str, set[str]]) -> None:
    """The image's built-in config is valid and its EXPOSE matches it."""
    config = tomllib.loads(IMAGE_CONFIG.read_text())
    check_config(checks, config, keys, "deploy/config.toml")
    checks.configs.append(("deploy/config.toml", IMAGE_CONFIG.read_text()))
    dockerfile = DOCKERFILE.read_text()
    expose = " ".join(re.findall(r"^EXPOSE (.*)$", dockerfile, re.M))
    for port in ["2121", config["server"]["passive_ports"], "9090"]:
        checks.check(port in expose.split(), "deploy/Dockerfile", f"EXPOSE lacks {port}")
    checks.check(re.search(r"^USER 10001", dockerfile, re.M) is not None, "deploy/Dockerfile", "USER is not 10001")
    checks.check(
        'ENTRYPOINT ["/usr/local/bin/bucketftp"]' in dockerfile, "deploy/Dockerfile", "unexpected ENTRYPOINT"
    )
    checks.check(
        re.search(r"^#\s*syntax\s*=", dockerfile, re.M) is None,
        "deploy/Dockerfile",
        "a `# syntax` line makes BuildKit fetch a frontend image (air-gapped builders fail)",
    )
    for arg in ("BUILDER_IMAGE", "RUNTIME_IMAGE"):
        found = re.search(rf"^ARG {arg}=(\S+)$", dockerfile, re.M)
        checks.check(
            found is not None and re.search(r":\d+\.\d+(\.\d+)?(-[\w.]+)?(@sha256:[0-9a-f]{64})?$", found.group(1)) is not None,
            "deploy/Dockerfile",
            f"{arg} is not a build argument pinned to a versioned tag",
        )
        checks.check(f"FROM ${{{arg}}}" in dockerfile, "deploy/Dockerfile", f"no FROM uses ${{{arg}}}")
    checks.check(
        re.search(r'^HEALTHCHECK .*\n?.*CMD \["/usr/local/bin/bucketftp", "healthcheck"\]', dockerfile, re.M) is not None,
        "deploy/Dockerfile",
        "HEALTHCHECK does not run bucketftp healthcheck",
    )


def gateway_binary() -> Path | None:
    """$BUCKETFTP_BIN, or a binary cargo already built (never builds one)."""
    named = os.environ.get("BUCKETFTP_BIN")
    if named:
        return Path(named)
    for profile in ("release", "debug"):
        candidate = ROOT / "target" / profile / "bucketftp"
        if candidate.is_file():
            return candidate
    return None


def check_with_gateway(checks: Checks) -> None:
    """Runs `bucketftp check-config` on every assembled config.toml, so the
    gateway's own parser has the last word. Paths that only exist in the pod
    (/data, the TLS files) are moved into a scratch directory; the storage is
    not contacted (check-config only builds the clients)."""
    binary = gateway_binary()
    if binary is None:
        print("check-chart: no bucketftp binary (cargo build, or set BUCKETFTP_BIN): skipping check-config")
        return
    with tempfile.TemporaryDirectory(prefix="check-chart-") as scratch:
        for name in ("tls.crt", "tls.key"):
            Path(scratch, name).write_text("placeholder\n")
        for index, (where, text) in enumerate(checks.configs):
            text = text.replace("file:///data", f"file://{scratch}/data")
            text = text.replace("/etc/bucketftp-tls/", f"{scratch}/")
            path = Path(scratch, f"config-{index}.toml")
            path.write_text(text)
            # A clean environment: no AWS_*/GOOGLE_*/AZURE_* from this machine.
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BUCKETFTP_CONFIG": str(path)}
            try:
                result = subprocess.run(
                    [str(binary), "check-config"], env=env, capture_output=True, text=True, timeout=60
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                checks.check(False, where, f"{binary} check-config: {err}")
                continue
            checks.check(
                result.returncode == 0,
                where,
                f"bucketftp check-config refuses the config: {result.stderr.strip() or result.stdout.strip()}",
            )


def main() -> int:
    checks = Checks()
    keys: dict[str, set[str]] = {}

    def read_keys() -> None:
        keys.update(known_keys())

    checks.run("src/config/", read_keys)
    if keys:
        checks.run("helm/bucketftp", lambda: check_chart(checks, keys))
        checks.run("deploy/kubernetes", lambda: check_manifests(checks, keys))
        checks.run("deploy/Dockerfile", lambda: check_image(checks, keys))
        check_with_gateway(checks)
    for failure in checks.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"check-chart: {checks.passed} passed, {len(checks.failures)} failed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
