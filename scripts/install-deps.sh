#!/usr/bin/env bash
# Installs the Debian packages the project builds, tests and runs with.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libfmt-dev libcli11-dev nlohmann-json3-dev libxxhash-dev zlib1g-dev
  libopenblas-dev libhwy-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy python3-torch   # test fixtures and reference checks
  libopenmpi-dev openmpi-bin            # optional: data-parallel rwkv train under mpirun
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
