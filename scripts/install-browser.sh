#!/usr/bin/env bash
# Install Debian's headless browser and its WebDriver for the dashboard test (idempotent).
# Skips apt-get entirely when /usr/bin/chromium and /usr/bin/chromedriver are already there.
set -euo pipefail

missing=()
command -v /usr/bin/chromium >/dev/null 2>&1 || missing+=(chromium)
command -v /usr/bin/chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-browser: chromium and chromedriver already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-browser: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
