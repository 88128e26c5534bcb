#!/usr/bin/env bash
# System packages for the UI's browser test: Debian's chromium, which Playwright drives through
# executable_path (Playwright's own browser download is not used). Idempotent: when chromium is
# already installed this returns at once, without touching apt.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
