#!/usr/bin/env bash
# Prepares the browser clients that e2e/test_grpc_web.py and
# e2e/test_web_client.py run: Debian's Chromium, the pinned npm packages,
# the code generated from proto/ and the grpc-web browser bundle. Idempotent; a repeat run only regenerates and rebundles
# (about a second), so it is safe to call before every test run.
set -euo pipefail
cd "$(dirname "$0")"

# Chromium, and a colour emoji font so that the web client's screenshots
# show its reactions rather than empty boxes.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  echo "grpc-web setup: installing Debian's ${missing[*]}" >&2
  # The package lists may be missing or stale on a fresh machine.
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# A copy of the lock inside node_modules says what was installed last.
if ! cmp -s package-lock.json node_modules/.package-lock.stamp 2>/dev/null; then
  echo "grpc-web setup: npm ci" >&2
  npm ci --silent --no-audit --no-fund
  cp package-lock.json node_modules/.package-lock.stamp
fi

# Always regenerated: cheap, and never stale against proto/.
npx --no-install buf generate ../../proto
npx --no-install esbuild browser-entry.mjs --bundle --format=esm --target=chrome120 \
  --outdir=dist --log-level=warning
