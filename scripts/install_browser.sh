#!/usr/bin/env bash
# `make browser` (part of `make test`): headless Chromium for tests/test_browser.py and tests/test_jupyterlab.py,
# from the system's packages (Debian/Ubuntu: chromium, and fonts-noto-cjk for the Chinese text) when it is
# missing. Where it cannot be installed (no apt-get, not root and no sudo), it says so and the browser tests
# are skipped; under CI (CI=true) they fail instead, so a CI machine without a browser is noticed.
set -uo pipefail
have_browser=false
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  command -v "$b" >/dev/null 2>&1 && have_browser=true
done
# The Chinese pages need a CJK font too (tests/test_browser.py checks which font Chromium drew them with).
have_cjk=false
fonts=$(fc-list 2>/dev/null || true)
[[ ${fonts,,} == *"noto sans cjk"* ]] && have_cjk=true
$have_browser && $have_cjk && exit 0
skip() { echo "make browser: $* The browser tests are skipped until Chromium and its CJK fonts are installed."; exit 0; }
command -v apt-get >/dev/null 2>&1 || skip "no chromium or CJK font, and no apt-get here: install them yourself."
SUDO=()
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || skip "installing it needs root: sudo apt-get install chromium fonts-noto-cjk"
  SUDO=(sudo -n)
fi
echo "make browser: installing chromium and fonts-noto-cjk (apt-get, about a minute)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq \
  && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null \
  || skip "apt-get could not install chromium (see its messages above)."
