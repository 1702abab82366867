#!/usr/bin/env bash
# Installs the Debian packages the appliance needs, only those missing. Without root or sudo it stops
# and prints the exact command to run.
set -euo pipefail
PACKAGES=(ffmpeg libcairo2-dev libpango1.0-dev pkg-config python3-dev python3-venv build-essential
          texlive-latex-base texlive-latex-extra texlive-fonts-recommended cm-super-minimal dvisvgm
          fonts-dejavu-core fonts-wqy-zenhei util-linux procps curl jq chromium chromium-driver
          systemd passwd)  # systemd-analyze and useradd: the service-unit tests (never skipped for want of them)
# fonts-wqy-zenhei: CJK text in Movie documents (16 MB; the conformance suite's CJK document needs it)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"
else
  echo "These Debian packages are missing: ${missing[*]}" >&2
  echo "Run as root:  apt-get update && $cmd" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
