#!/bin/sh
# Installs what the tests need (apt), builds, and runs every test: unit tests and the
# integration tests (real fanotify/inotify, real rsync, a real sshd the tests start on
# 127.0.0.1 with throwaway keys). Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -x /opt/swift/usr/bin/swift ] && PATH="/opt/swift/usr/bin:$PATH"
export PATH
swift build --build-tests
exec swift test --skip-build "$@"
