#!/bin/sh
# Installs what fansync needs (apt), builds it, and mirrors a demo folder to a local
# backup folder until Ctrl-C. Run as root on Debian 12.
#   scripts/demo.sh                 mirrors /tmp/fansync-demo/source to /tmp/fansync-demo/backup
#   scripts/demo.sh SOURCE TARGET   mirrors SOURCE to TARGET (a directory, or [user@]host:dir)
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -x /opt/swift/usr/bin/swift ] && PATH="/opt/swift/usr/bin:$PATH"
export PATH
swift build -c release --product fansync
BIN="$(swift build -c release --show-bin-path)/fansync"
if [ $# -ge 2 ]; then
    SOURCE="$1"; TARGET="$2"; shift 2
else
    SOURCE=/tmp/fansync-demo/source; TARGET=/tmp/fansync-demo/backup
    mkdir -p "$SOURCE/code" "$SOURCE/checkpoints" "$TARGET"
    [ -e "$SOURCE/code/train.py" ] || printf 'print("training")\n' > "$SOURCE/code/train.py"
    [ -e "$SOURCE/notes.md" ] || printf '# notes\n' > "$SOURCE/notes.md"
    echo "fansync demo: edit files in $SOURCE and watch them appear in $TARGET (Ctrl-C stops)" >&2
fi
mkdir -p /run/fansync
exec "$BIN" run "$SOURCE" "$TARGET" --status-file /run/fansync/status.json "$@"
