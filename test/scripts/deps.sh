#!/usr/bin/env bash
# Installs the Debian packages Interlock's build and tests need, skipping
# what is already there. Run as root (CI, `make test`, `make demo`).
#   deps.sh            test dependencies: PostgreSQL server and clients, iproute2
#   deps.sh --bpf      also the BPF toolchain for `make generate` (clang, llvm, libbpf-dev)
#   deps.sh --bench    also PgBouncer for the benchmarks
set -euo pipefail

want=(postgresql postgresql-client iproute2 attr)
for arg in "$@"; do
	case "$arg" in
	--bpf) want+=(clang llvm libbpf-dev bpftool) ;;
	--bench) want+=(pgbouncer) ;;
	*) echo "deps.sh: unknown option $arg" >&2; exit 2 ;;
	esac
done

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's postgresql package starts a cluster on 5432; the tests start
# their own servers and do not need it.
