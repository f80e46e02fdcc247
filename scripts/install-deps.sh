#!/bin/sh
# Installs what fansync needs to build, run and test on Debian 12 (run as root).
set -eu
PACKAGES="liburing-dev libcap-dev libxxhash-dev libsqlite3-dev liblua5.4-dev lua5.4 rsync openssh-client openssh-server lsyncd xxhash git"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "fansync: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
