#!/usr/bin/env bash
# Fresh-machine check: the README's two commands on a minimal Debian 12 (bookworm) root.
#
#   sudo tools/fresh_machine_check.sh [--dir DIR] [--ref REF] [--reuse-caches] [--keep]
#
# Builds a minimal root with debootstrap (installed from Debian if missing), copies in what belongs
# to this machine rather than to the project (certificate authorities, pip and apt settings, DNS),
# clones the repository at REF (default: HEAD) into it and runs, in a chroot with a plain
# environment (no CUDA_HOME, no /usr/local toolkit, PATH=/usr/sbin:/usr/bin:/sbin:/bin):
#   tools/dev.sh demo
#   tools/dev.sh test
# and reports each command's exit status and wall time (also into DIR/fresh_check.txt).
# --reuse-caches binds this machine's pip cache and the evax ccache into the root: the downloads
# and compiles are the same bits, only faster (what .ci/run uses); without it everything is
# downloaded and built as a new user would. --keep leaves the root in place (default: removed).
# Exit status: 0 when both commands succeed, 1 otherwise, 2 on misuse.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=/var/tmp/evax-fresh
REF=HEAD
REUSE=0
KEEP=0
while (($#)); do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --ref) REF=$2; shift 2 ;;
    --reuse-caches) REUSE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh_machine_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "fresh_machine_check: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
say() { printf '\033[1m[fresh]\033[0m %s\n' "$*" >&2; }

MIRROR=${EVAX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CHROOT=$DIR/root
REPORT=$DIR/fresh_check.txt

mounts=()
cleanup() {
  local m
  for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -R -l "${mounts[i]}" 2>/dev/null || true; done
  if ((KEEP == 0)) && [[ -d $CHROOT ]]; then rm -rf --one-file-system "$CHROOT"; fi
}
trap cleanup EXIT
bind() { mkdir -p "$2"; mount --rbind "$1" "$2"; mounts+=("$2"); }

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rm -rf --one-file-system "$CHROOT"
mkdir -p "$CHROOT"
t0=$(date +%s)
say "debootstrap --variant=minbase bookworm $CHROOT ($MIRROR)"
debootstrap --variant=minbase bookworm "$CHROOT" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 ||
  { tail -20 "$DIR/debootstrap.log" >&2; exit 1; }
say "debootstrap took $(( $(date +%s) - t0 )) s"

# What belongs to the machine: CAs (an egress proxy's among them), pip and apt settings, DNS.
cp /etc/resolv.conf /etc/hosts "$CHROOT/etc/"
mkdir -p "$CHROOT/etc/ssl/certs" "$CHROOT/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$CHROOT/etc/ssl/certs/ca-certificates.crt"
cp -r /usr/local/share/ca-certificates/. "$CHROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
[[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$CHROOT/etc/pip.conf"
for f in /etc/apt/apt.conf.d/*proxy* /etc/apt/apt.conf.d/99artifact-registry; do
  [[ -f $f ]] && cp "$f" "$CHROOT/etc/apt/apt.conf.d/"
done
cat >"$CHROOT/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
# Pass through the machine's pip settings that live in the environment (index, CA, timeouts).
pip_env=()
while IFS='=' read -r k v; do pip_env+=("$k=$v"); done < <(env | grep -E '^(PIP_(INDEX_URL|EXTRA_INDEX_URL|CERT|DEFAULT_TIMEOUT|TRUSTED_HOST)|HTTPS?_PROXY|https?_proxy|NO_PROXY|no_proxy)=' || true)

bind /proc "$CHROOT/proc"
bind /dev "$CHROOT/dev"
bind /sys "$CHROOT/sys"
mkdir -p "$CHROOT/dev/shm"

say "cloning $ROOT at $REF"
git -C "$ROOT" rev-parse --verify "$REF^{commit}" >/dev/null
# Same absolute path as here, so --reuse-caches finds this machine's ccache entries.
SRC=$ROOT
git clone -q --no-local "$ROOT" "$CHROOT$SRC"
git -C "$CHROOT$SRC" checkout -q "$(git -C "$ROOT" rev-parse "$REF^{commit}")"
# The split lists some tests read live beside the repository, as in the project's layout.
if [[ -d $ROOT/../shared/data ]]; then
  shared=$(cd "$ROOT/../shared" && pwd)
  bind "$shared" "$CHROOT$shared"
fi

if ((REUSE)); then
  pip_cache=$(pip3 cache dir 2>/dev/null || echo "$HOME/.cache/pip")
  mkdir -p "$pip_cache" "${EVAX_CACHE:-$HOME/.cache/evax}/ccache"
  bind "$pip_cache" "$CHROOT/root/.cache/pip"
  bind "${EVAX_CACHE:-$HOME/.cache/evax}/ccache" "$CHROOT/root/.cache/evax/ccache"
fi

run_in_root() {
  chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    TERM=dumb "${pip_env[@]}" /bin/bash -c "cd '$SRC' && $1"
}

: >"$REPORT"
status=0
for cmd in "tools/dev.sh demo" "tools/dev.sh test"; do
  say "running: $cmd"
  log="$DIR/$(echo "$cmd" | tr ' /' '__').log"
  t=$(date +%s)
  set +e
  run_in_root "$cmd" >"$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - t ))
  line="fresh-machine: '$cmd' exit $rc in ${secs} s (log: $log)"
  echo "$line" | tee -a "$REPORT"
  ((rc == 0)) || { status=1; tail -25 "$log" >&2; }
done
du -sh "$CHROOT/root/.cache/evax" 2>/dev/null | sed 's/^/fresh-machine: evax cache (venv + ccache): /' | tee -a "$REPORT"
du -sh "$CHROOT/var/cache/apt/archives" 2>/dev/null | sed 's/^/fresh-machine: apt downloads: /' | tee -a "$REPORT"
exit $status
