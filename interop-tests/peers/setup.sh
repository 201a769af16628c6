#!/usr/bin/env bash
# Installs the reference peers that do not come from this workspace's Cargo build, from
# their package registries: aioquic (PyPI) into interop-tests/peers/.venv, and ngtcp2
# (Debian's libngtcp2-dev 0.12 + libngtcp2-crypto-gnutls-dev, apt) under our own small
# C peer, interop-tests/peers/ngtcp2/ngtcp2_peer.c, compiled into
# interop-tests/peers/.build/ngtcp2-peer. Idempotent: a peer that is already installed
# at the pinned version (and, for ngtcp2, compiled after its source changed) is left alone.
#
#   bash interop-tests/peers/setup.sh            # aioquic and ngtcp2
#   bash interop-tests/peers/setup.sh ngtcp2     # ngtcp2 only (what the runner calls)
#   bash interop-tests/peers/setup.sh quinn-pq   # also quinn-pq-peer (cargo, aws-lc-rs)
#   QUILL_PEERS_VENV=DIR bash .../setup.sh       # another venv location
#
# Prints one line per peer: `aioquic ready VENV/bin/python (N s)`,
# `ngtcp2 ready PATH (apt N s, cc M s)`. Without an argument, an ngtcp2 that cannot be
# installed (no apt, another libngtcp2 version) prints `ngtcp2 unavailable: WHY` and does
# not fail the script; with `ngtcp2` it does.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${QUILL_PEERS_VENV:-$here/.venv}"
aioquic_version="1.7.2"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

# ngtcp2: the peer is written against libngtcp2 0.12's API (Debian bookworm); 1.x
# renamed much of it.
ngtcp2_setup() {
    local src="$here/ngtcp2/ngtcp2_peer.c" out="$here/.build/ngtcp2-peer"
    local libs="libngtcp2 libngtcp2_crypto_gnutls gnutls" t0 apt_s=0 cc_s=0
    t0=$(date +%s)
    if ! pkg-config --exists $libs 2>/dev/null || ! command -v cc >/dev/null 2>&1; then
        # Called where `set -e` does not hold (inside `if !`): every step checks.
        $SUDO apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libngtcp2-dev \
            libngtcp2-crypto-gnutls-dev libgnutls28-dev pkg-config gcc >/dev/null || return 1
    fi
    apt_s=$(( $(date +%s) - t0 ))
    local v
    v="$(pkg-config --modversion libngtcp2)" || return 1
    case "$v" in
        0.12.*) ;;
        *) echo "libngtcp2 $v installed; ngtcp2_peer.c is written against 0.12" >&2; return 1 ;;
    esac
    t0=$(date +%s)
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
        mkdir -p "$(dirname "$out")" || return 1
        # shellcheck disable=SC2046
        cc -O2 -Wall -o "$out.tmp" "$src" $(pkg-config --cflags --libs $libs) || return 1
        mv "$out.tmp" "$out" || return 1
    fi
    cc_s=$(( $(date +%s) - t0 ))
    echo "ngtcp2 ready $out (libngtcp2 $v; apt $apt_s s, cc $cc_s s)"
}

if [ "${1:-}" = "ngtcp2" ]; then
    ngtcp2_setup
    exit 0
fi

start=$(date +%s)
if ! "$venv/bin/python" -c "import aioquic, sys; sys.exit(aioquic.__version__ != '$aioquic_version')" 2>/dev/null; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "aioquic==$aioquic_version"
fi
echo "aioquic ready $venv/bin/python ($(( $(date +%s) - start )) s)"

err="$(mktemp)"
if ! (ngtcp2_setup) 2>"$err"; then
    echo "ngtcp2 unavailable: $(tail -n 1 "$err")"
fi
rm -f "$err"

if [ "${1:-}" = "quinn-pq" ]; then
    # quinn with rustls's aws-lc-rs provider, X25519MLKEM768 preferred (crates.io).
    # Only this binary: building quinn-peer with the feature would replace it.
    start=$(date +%s)
    (cd "$here/../.." && cargo build -q -p quill-interop --features aws-lc-pq --bin quinn-pq-peer)
    echo "quinn-pq ready ($(( $(date +%s) - start )) s)"
fi
