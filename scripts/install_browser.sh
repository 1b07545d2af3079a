#!/usr/bin/env bash
# Installs Debian's chromium (+ fonts) for the real-browser tests, when it is missing.
# Never `playwright install`: the tests drive /usr/bin/chromium through Python playwright.
set -u
if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "browser tests will be skipped: chromium is missing and this user cannot apt-get install it"; exit 0; fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser tests will be skipped: no apt-get to install chromium"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium fonts-liberation >/dev/null) \
  && echo "installed $(/usr/bin/chromium --version 2>/dev/null)" \
  || echo "browser tests will be skipped: apt-get install chromium failed"
exit 0
