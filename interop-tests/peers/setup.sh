#!/usr/bin/env bash
# Installs the reference peers that do not come from this workspace's Cargo build, from
# their package registries, into interop-tests/peers/.venv (aioquic, PyPI) and through
# apt (ngtcp2's Debian examples, used only to record what they speak). Idempotent: a
# peer that is already installed at the pinned version is left alone.
#
#   bash interop-tests/peers/setup.sh            # aioquic
#   bash interop-tests/peers/setup.sh quinn-pq   # also quinn-pq-peer (cargo, aws-lc-rs)
#   QUILL_PEERS_VENV=DIR bash .../setup.sh       # another venv location
#
# Prints one line per peer: `aioquic ready VENV/bin/python (N s)`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${QUILL_PEERS_VENV:-$here/.venv}"
aioquic_version="1.7.2"

start=$(date +%s)
if ! "$venv/bin/python" -c "import aioquic, sys; sys.exit(aioquic.__version__ != '$aioquic_version')" 2>/dev/null; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "aioquic==$aioquic_version"
fi
echo "aioquic ready $venv/bin/python ($(( $(date +%s) - start )) s)"

if [ "${1:-}" = "quinn-pq" ]; then
    # quinn with rustls's aws-lc-rs provider, X25519MLKEM768 preferred (crates.io).
    # Only this binary: building quinn-peer with the feature would replace it.
    start=$(date +%s)
    (cd "$here/../.." && cargo build -q -p quill-interop --features aws-lc-pq --bin quinn-pq-peer)
    echo "quinn-pq ready ($(( $(date +%s) - start )) s)"
fi
