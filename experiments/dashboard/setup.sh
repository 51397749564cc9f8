#!/usr/bin/env bash
# What the asv dashboard check needs from Debian, installed with apt-get when missing (root):
# headless Chromium and its WebDriver, and the JavaScript libraries the asv pages load, which
# asv's index.html takes from CDNs (unreachable offline); localize.py points the published
# pages at these copies instead. Same pattern as experiments/slurm/local-cluster.sh.
#
#   experiments/dashboard/setup.sh          install what is missing (needs root and apt-get)
#   experiments/dashboard/setup.sh check    exit 0 when everything is there, else list it
set -euo pipefail

PACKAGES=(chromium chromium-driver libjs-jquery libjs-jquery-flot libjs-jquery-stupidtable
          node-blueimp-md5 libjs-bootstrap)
FILES=(/usr/bin/chromium /usr/bin/chromedriver /usr/share/javascript/jquery/jquery.min.js
       /usr/share/javascript/jquery-flot/jquery.flot.js
       /usr/share/javascript/jquery-stupidtable/stupidtable.min.js
       /usr/share/javascript/blueimp-md5/md5.min.js
       /usr/share/javascript/bootstrap/js/bootstrap.min.js)

missing() {
    local f
    for f in "${FILES[@]}"; do [[ -e $f ]] || echo "$f"; done
}

if [[ ${1:-install} == check ]]; then
    m=$(missing)
    [[ -z $m ]] || { echo "dashboard setup: missing $(echo $m)" >&2; exit 1; }
    exit 0
fi
m=$(missing)
[[ -z $m ]] && exit 0
command -v apt-get >/dev/null || { echo "dashboard setup: no apt-get for ${PACKAGES[*]}" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "dashboard setup: installing ${PACKAGES[*]} needs root" >&2; exit 1; }
echo "dashboard setup: installing ${PACKAGES[*]} with apt-get ($(echo $m) missing)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
