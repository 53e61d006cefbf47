#!/usr/bin/env bash
# install.sh: install pyshim and what it needs on a Debian bookworm machine.  Run as root; idempotent.
#
#   ./install.sh          Debian packages, venv /opt/pyshim/venv, pyshim, /usr/local/bin/containerd-shim-pyshim-v1
#   ./install.sh --dev    also the `test` and `dev` extras, and the containerd versions and busybox image the
#                              integration tests use (cached under /var/cache/pyshim)
#
# Rules: apt-get update runs only when a package is missing and apt cannot install it from the lists it has;
# the venv uses Debian's /usr/bin/python3 (never pyenv or another python on PATH); the shim binary is pip's console
# script, whose first line must be the venv interpreter by absolute path (containerd execs it directly).
set -euo pipefail

PREFIX=/opt/pyshim
VENV="$PREFIX/venv"
PYTHON=/usr/bin/python3
SHIM=containerd-shim-pyshim-v1
LINK=/usr/local/bin/$SHIM
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Runtime: containerd 1.6.20 and the OCI runtimes the backends drive; busybox-static for test images;
# the golang-*-dev packages carry upstream's .proto files and Go sources the conformance tests read.
PACKAGES=(
  containerd runc crun runsc criu busybox-static
  python3 python3-venv ca-certificates
  golang-github-containerd-containerd-dev golang-github-containerd-ttrpc-dev
  golang-github-containerd-cgroups-dev golang-github-containerd-go-runc-dev
  golang-github-gogo-protobuf-dev golang-github-gogo-googleapis-dev
  qemu-system-x86 debootstrap cpio e2fsprogs  # tools/vm-test: the pure cgroup v2 VM (docs/vm.md)
  containernetworking-plugins gcc libc6-dev    # CRI tests: CNI loopback; static pause/stand-in programs (docs/cri.md)
)

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    # --- place for the main-job demo flag (--run-demo), added by the lead; not implemented here ---
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say() { printf 'install.sh: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: must run as root (./install.sh, as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# (no `| grep -q` here: with pipefail, grep exiting early makes the writer's SIGPIPE fail the test)
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }
has_candidate() { [[ "$(apt-cache policy "$1" 2>/dev/null || true)" =~ Candidate:\ [^\(] ]]; }

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  say "Debian packages: all ${#PACKAGES[@]} already installed"
else
  need_update=0
  for p in "${missing[@]}"; do has_candidate "$p" || need_update=1; done
  if [ $need_update -eq 1 ]; then
    say "apt-get update (package lists lack: ${missing[*]})"
    apt-get update -q >/dev/null
  fi
  say "apt-get install ${missing[*]}"
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/pyshim-apt.log 2>&1; then
    say "install failed with the current lists; apt-get update and retry"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/pyshim-apt.log 2>&1 \
      || { cat /tmp/pyshim-apt.log >&2; exit 1; }
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "install.sh: $PYTHON is older than 3.11" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ] || [ "$(readlink -f "$VENV/bin/python")" != "$(readlink -f "$PYTHON")" ]; then
  say "creating venv $VENV with $PYTHON"
  rm -rf "$VENV"
  mkdir -p "$PREFIX"
  "$PYTHON" -m venv "$VENV"
else
  say "venv $VENV exists ($("$VENV/bin/python" --version))"
fi

target="$HERE"
[ $DEV -eq 1 ] && target="$HERE[test,dev]"
say "pip install $target"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$target"

script="$VENV/bin/$SHIM"
# pip's console script imports `re`, runs `site` and finalises the interpreter: CPU on every start and
# delete, which containerd waits for. Replace it with a launcher that skips all three (-IS, os._exit), puts
# only our site-packages on sys.path and takes the modules of start, delete and -info from one code cache
# (shim/codecache.py; -P: from site-packages, never from the directory this runs in).
purelib="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
codecache="$VENV/share/pyshim/$SHIM.codecache"
mkdir -p "$VENV/share/pyshim"
"$VENV/bin/python" -P -m shim.codecache build "$codecache" \
  shim.runc.main shim.commands.start shim.commands.delete shim.runc.cleanup shim.commands.info shim.runc.features \
  >/dev/null
"$VENV/bin/python" -P -m shim.codecache launcher "$script" "$VENV/bin/python" "$codecache" shim.runc.main:main \
  "$purelib"
"$script" -v >/dev/null || { echo "install.sh: $script -v failed" >&2; exit 1; }
shebang="$(head -n1 "$script")"
case "$shebang" in
  "#!$VENV/bin/python"*) ;;
  *) echo "install.sh: $script starts with '$shebang', not the venv interpreter" >&2; exit 1 ;;
esac
ln -sfn "$script" "$LINK"
say "linked $LINK -> $script ($shebang)"

if [ $DEV -eq 1 ]; then
  # a third-party backend packaged on its own, as plugin authors do (tests/integration/test_plugin.py)
  say "pip install tests/plugins/pyshim-envtag (example third-party backend)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --upgrade \
    "$HERE/tests/plugins/pyshim-envtag"
  # a test-only backend that injects faults into one container (tests/integration/test_sharing_faults.py)
  say "pip install tests/plugins/pyshim-faults (fault-injecting test backend)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --upgrade \
    "$HERE/tests/plugins/pyshim-faults"
  # an example shim built on the library, packaged on its own (tests/integration/test_example_shim.py)
  say "pip install examples/chroot-shim (example shim io.containerd.pychroot.v1)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --upgrade \
    "$HERE/examples/chroot-shim"
  say "fetching containerd versions for the integration tests (cached in /var/cache/pyshim)"
  "$VENV/bin/python" "$HERE/tools/fetch_containerd.py"
  "$VENV/bin/python" "$HERE/tools/busybox_image.py"
fi

# --- place for the main-job demo (--run-demo), added by the lead ---

say "done"
