#!/usr/bin/env bash
# Builds stunturn-agent as one self-contained binary (the Swift runtime, Foundation and Dispatch
# linked in; only the system's libc, libm, libstdc++ and libgcc_s are needed) and packs it:
#
#   .build-package/dist/stunturn-agent-VERSION-linux-ARCH.tar.gz   binary, README.md, config.yaml.example,
#                                                   examples/*.yaml, examples/systemd/*.service
#                                                   (stunturn-agent and stunturn-server)
#   .build-package/dist/stunturn-agent_VERSION_DEBARCH.deb
#                                    /usr/bin, /lib/systemd/system, /usr/share/doc/stunturn-agent
#   .build-package/dist/SHA256SUMS
#
# usage: scripts/package.sh [--out DIR] [--version VERSION] [--scratch-path DIR] [--no-build]
#
# VERSION defaults to stunturnVersion in Sources/stunturn-agent (what --version prints).
# The release build goes to its own folder (.build-package, which git ignores; the packages go
# to its dist/ unless --out says otherwise) so it never replaces the binaries of
# 'swift build -c release'. --no-build packs what that folder holds already.
# scripts/test-package.sh checks the result where the Swift toolchain is absent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH="$ROOT/.build-package"
OUT=""
VERSION=""
BUILD=1

die() { echo "package.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT=$(realpath -m "$2"); shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        --scratch-path) SCRATCH=$(realpath -m "$2"); shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

OUT=${OUT:-$SCRATCH/dist}
cd "$ROOT"
SOURCE_VERSION=$(sed -n 's/^let stunturnVersion = "\(.*\)"$/\1/p' Sources/stunturn-agent/StunturnAgent.swift)
[[ -n $SOURCE_VERSION ]] || die "no 'let stunturnVersion = \"...\"' in Sources/stunturn-agent/StunturnAgent.swift"
VERSION=${VERSION:-$SOURCE_VERSION}
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "version '$VERSION' must start with a digit (Debian's rule)"

ARCH=$(uname -m)
DEB_ARCH=$(dpkg --print-architecture 2>/dev/null) || case "$ARCH" in
    x86_64) DEB_ARCH=amd64 ;; aarch64) DEB_ARCH=arm64 ;; *) DEB_ARCH=$ARCH ;;
esac
# Timestamps in both archives: the last commit's, so packing the same commit twice gives the
# same files.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# 1. The build. --static-swift-stdlib links libswiftCore, Foundation (with its ICU data),
# Dispatch and the concurrency runtime from the toolchain's static archives; --disable-local-rpath
# leaves out the $ORIGIN search path that an installed binary has no use for.
BUILD_FLAGS=(-c release --static-swift-stdlib --disable-local-rpath --product stunturn-agent --scratch-path "$SCRATCH")
if [[ $BUILD = 1 ]]; then
    echo "== swift build ${BUILD_FLAGS[*]}"
    start=$SECONDS
    swift build "${BUILD_FLAGS[@]}"
    echo "   built in $((SECONDS - start)) s"
fi
BIN_DIR=$(swift build "${BUILD_FLAGS[@]}" --show-bin-path)
BUILT="$BIN_DIR/stunturn-agent"
[[ -x $BUILT ]] || die "no binary at $BUILT (run without --no-build)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/stunturn-package.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

BIN="$WORK/stunturn-agent"
STRIP=$(command -v strip || command -v llvm-strip) || die "neither strip (binutils) nor llvm-strip found"
"$STRIP" --strip-all -o "$BIN" "$BUILT"
chmod 0755 "$BIN"

# 2. Nothing of the toolchain may be needed: no search path, no library outside the short list
# every glibc system has, and each of them found in the system's own folders.
TOOLCHAIN=""
if SWIFT=$(command -v swift); then TOOLCHAIN=$(dirname "$(dirname "$(readlink -f "$SWIFT")")"); fi
needed=$(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
paths=$(readelf -d "$BIN" | sed -n 's/.*(\(RPATH\|RUNPATH\)).*\[\(.*\)\]/\2/p')
[[ -z $paths ]] || die "the binary has a library search path ($paths); it must have none"
for lib in $needed; do
    case "$lib" in
        libc.so.6|libm.so.6|libstdc++.so.6|libgcc_s.so.1|ld-linux-*.so.*|libdl.so.2|libpthread.so.0|librt.so.1|libutil.so.1) ;;
        *) die "the binary needs $lib, which is not a system library every glibc machine has" ;;
    esac
done
ldd_out=$(ldd "$BIN")
if grep -q "not found" <<<"$ldd_out"; then die "unresolved libraries: $(grep 'not found' <<<"$ldd_out")"; fi
if [[ -n $TOOLCHAIN ]] && grep -qF "$TOOLCHAIN" <<<"$ldd_out"; then die "a library resolves into the toolchain ($TOOLCHAIN): $ldd_out"; fi
if strings -a "$BIN" 2>/dev/null | grep -q "libswiftCore\.so\|libFoundation\.so\|libdispatch\.so"; then
    die "the binary still names a shared Swift runtime library"
fi
BUILT_VERSION=$("$BIN" --version)
[[ $BUILT_VERSION = "$SOURCE_VERSION" ]] || die "the binary says version '$BUILT_VERSION', the source '$SOURCE_VERSION'"
SIZE=$(stat -c %s "$BIN")
echo "== stunturn-agent $BUILT_VERSION: $SIZE bytes stripped ($(( (SIZE + 524288) / 1048576 )) MiB); needs: $(echo $needed)"

mkdir -p "$OUT"

# 3. The tarball: one folder, named like the file.
NAME="stunturn-agent-$VERSION-linux-$ARCH"
STAGE="$WORK/$NAME"
install -d -m 0755 "$STAGE/examples/systemd"
install -m 0755 "$BIN" "$STAGE/stunturn-agent"
install -m 0644 README.md config.yaml.example "$STAGE/"
install -m 0644 examples/*.yaml "$STAGE/examples/"
install -m 0644 examples/systemd/*.service "$STAGE/examples/systemd/"
TARBALL="$OUT/$NAME.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$WORK" -cf - "$NAME" | gzip -9n > "$TARBALL"

# 4. The Debian package.
DEB_ROOT="$WORK/deb"
DOC="$DEB_ROOT/usr/share/doc/stunturn-agent"
install -d -m 0755 "$DEB_ROOT/DEBIAN" "$DEB_ROOT/usr/bin" "$DEB_ROOT/lib/systemd/system" "$DOC/examples"
install -m 0755 "$BIN" "$DEB_ROOT/usr/bin/stunturn-agent"
# The units name /usr/local/bin for a binary installed by hand; the package's is in /usr/bin.
for unit in examples/systemd/*.service; do
    sed 's#/usr/local/bin/stunturn-agent#/usr/bin/stunturn-agent#g' "$unit" > "$DEB_ROOT/lib/systemd/system/$(basename "$unit")"
    chmod 0644 "$DEB_ROOT/lib/systemd/system/$(basename "$unit")"
done
install -m 0644 README.md config.yaml.example "$DOC/"
install -m 0644 examples/*.yaml "$DOC/examples/"
YEAR=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
cat > "$DOC/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: stunturn
Comment: stunturn-agent is statically linked with the Swift runtime, Foundation and Dispatch
 (Apache-2.0 with Runtime Library Exception), ICU (Unicode-3.0), swift-argument-parser,
 swift-log, swift-crypto with BoringSSL, swift-service-lifecycle, swift-async-algorithms,
 swift-collections (Apache-2.0; BoringSSL also ISC and OpenSSL) and Yams with libyaml (MIT).

Files: *
Copyright: $YEAR the stunturn authors
License: see the project's repository
EOF
chmod 0644 "$DOC/copyright"

# Depends: what dpkg-shlibdeps derives from the binary's symbols (versioned), or else the
# packages that ship the libraries ldd shows.
depends=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$WORK/shlibs/debian"
    printf 'Source: stunturn\n\nPackage: stunturn-agent\nArchitecture: any\n' > "$WORK/shlibs/debian/control"
    depends=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O "$DEB_ROOT/usr/bin/stunturn-agent" 2>/dev/null \
        | sed -n 's/^shlibs:Depends=//p') || depends=""
fi
if [[ -z $depends ]]; then
    pkgs=()
    while read -r path; do
        [[ -n $path ]] || continue
        p=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1) || p=""
        [[ -n $p ]] && pkgs+=("$p")
    done < <(ldd "$BIN" | awk '$3 ~ /^\// {print $3}')
    glibc=$(objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    depends=$(printf '%s\n' "${pkgs[@]}" | sort -u | sed "s/^libc6\$/libc6 (>= $glibc)/" | paste -sd, | sed 's/,/, /g')
fi
[[ -n $depends ]] || die "could not work out the package's Depends"
depends="$depends, passwd"   # groupadd, in postinst

INSTALLED_KB=$(du -sk --exclude=DEBIAN "$DEB_ROOT" | cut -f1)
cat > "$DEB_ROOT/DEBIAN/control" <<EOF
Package: stunturn-agent
Version: $VERSION
Architecture: $DEB_ARCH
Maintainer: stunturn maintainers <maintainers@stunturn.invalid>
Installed-Size: $INSTALLED_KB
Depends: $depends
Section: net
Priority: optional
Description: peer-to-peer port forwarding between machines behind NATs
 stunturn-agent connects two machines behind NATs directly (TCP or UDP hole
 punching, relayed through the signaling server when no direct path exists)
 and forwards ports over an end-to-end encrypted tunnel. One binary is the
 agent, the signaling server and the key generator.
 .
 The systemd unit stunturn-agent.service runs the config kept at
 /etc/stunturn/agent.yaml (readable by root and the group stunturn, which
 the package makes); stunturn-server.service runs the signaling server on
 port 7000. Neither is enabled on install; see
 /usr/share/doc/stunturn-agent/README.md.
EOF
# Maintainer scripts: tell systemd about the unit, stop it before removal. Nothing is enabled or
# started: the agent needs a config first.
cat > "$DEB_ROOT/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # The agent's unit reads /etc/stunturn as the group stunturn (its user is made up at each
    # start): the group, and the folder only root and it may read.
    getent group stunturn >/dev/null || groupadd --system stunturn
    if [ ! -e /etc/stunturn ]; then
        install -d -m 0750 -o root -g stunturn /etc/stunturn
    fi
fi
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    for unit in stunturn-agent.service stunturn-server.service; do
        if systemctl is-active --quiet "$unit"; then systemctl restart "$unit" || true; fi
    done
fi
exit 0
EOF
cat > "$DEB_ROOT/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    for unit in stunturn-agent.service stunturn-server.service; do
        systemctl stop "$unit" >/dev/null 2>&1 || true
        systemctl disable "$unit" >/dev/null 2>&1 || true
    done
fi
exit 0
EOF
cat > "$DEB_ROOT/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
# On purge, the folder goes if nothing is left in it; the group stays (files may still carry it).
if [ "$1" = purge ] && [ -d /etc/stunturn ]; then
    rmdir /etc/stunturn 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOF
chmod 0755 "$DEB_ROOT/DEBIAN/postinst" "$DEB_ROOT/DEBIAN/prerm" "$DEB_ROOT/DEBIAN/postrm"
(cd "$DEB_ROOT" && find usr lib -type f -exec md5sum {} + | LC_ALL=C sort -k2) > "$DEB_ROOT/DEBIAN/md5sums"
chmod 0644 "$DEB_ROOT/DEBIAN/control" "$DEB_ROOT/DEBIAN/md5sums"
find "$DEB_ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
DEB="$OUT/stunturn-agent_${VERSION}_${DEB_ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$DEB_ROOT" "$DEB" >/dev/null

(cd "$OUT" && sha256sum "$(basename "$TARBALL")" "$(basename "$DEB")" > SHA256SUMS)
echo "== $TARBALL ($(stat -c %s "$TARBALL") bytes)"
echo "== $DEB ($(stat -c %s "$DEB") bytes), Depends: $depends"
echo "== $OUT/SHA256SUMS"
