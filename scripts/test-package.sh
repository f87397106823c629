#!/usr/bin/env bash
# Checks what scripts/package.sh made, on a machine made to look like one without Swift: in a
# private mount, network and process namespace (unshare, as root), the toolchain's folder is
# hidden under an empty tmpfs, and the packaged binary must still run:
#
#   --version, keygen, check on config.yaml.example and examples/*.yaml with keys put in (one
#   through key_file:, read as the unit's user would), the unit files (systemd-analyze verify,
#   when systemd's tools are there), and a tiny end-to-end: server + forward --expose + run on
#   127.0.0.1 carrying 1 MiB to an echo service and back, then status, and reload as the unit's
#   ExecReload= runs it (a forward added; an invalid file refused).
#
# A toolchain-linked control (a hello world from swiftc) must fail there, which shows the mask
# works. The tarball's file list and the .deb's control, owners and layout (dpkg -x into a
# scratch root) are checked too. Ends with "package: N passed, N failed"; exit 1 on a failure.
#
# usage: scripts/test-package.sh [--dist DIR] [--binary PATH] [--timeout SECONDS]
#   --dist DIR     where package.sh put the tarball and the .deb (default: .build-package/dist)
#   --binary PATH  run the namespace checks on this binary instead, skipping the package
#                  checks (scripts/test-package.sh --binary .build/debug/stunturn-agent fails:
#                  that binary needs the toolchain's shared runtime)
#   --timeout S    bound for the namespace part (default 120)
# Everything it makes is in one temporary folder, removed at exit; the processes it starts are
# in their own PID namespace, so none outlives it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------------------------------------
# The part inside the namespaces (the script runs itself with --inner).
# ---------------------------------------------------------------------------------------------
if [[ ${1:-} = --inner ]]; then
    # Set by the outer part: WORK BIN VERSION SRC MASKS CONTROLS UNITS EXPECT_DEB_BIN
    passed=0; failed=0
    ok() { echo "ok   $*"; passed=$((passed + 1)); }
    bad() { echo "FAIL $*"; failed=$((failed + 1)); }
    pids=()
    finish() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        echo "package: $passed passed, $failed failed"
        [[ $failed = 0 ]] || exit 1
    }
    trap finish EXIT
    py() { python3 "$WORK/helper.py" "$@"; }

    mount --make-rprivate /
    py lo-up || { bad "bringing up loopback in the private network namespace"; exit 1; }

    # Hide the toolchain.
    for dir in $MASKS; do
        mount -t tmpfs -o ro,size=64k,mode=0755 stunturn-no-toolchain "$dir"
        if [[ -z $(ls -A "$dir") ]]; then ok "toolchain folder $dir hidden"; else bad "toolchain folder $dir still has files"; fi
    done
    if command -v swift >/dev/null 2>&1; then bad "swift is still on PATH ($(command -v swift))"; fi

    # The controls need the toolchain, so they must not run now.
    for control in $CONTROLS; do
        if out=$("$control" --version 2>&1); then
            bad "control $control ran without the toolchain; the mask does not hide it ($out)"
        elif grep -q "cannot open shared object file" <<<"$out"; then
            ok "control $control fails without the toolchain: ${out%%$'\n'*}"
        else
            bad "control $control failed, but not for a missing library: $out"
        fi
    done

    # The binary under test.
    cd "$WORK"
    if out=$(timeout 10 "$BIN" --version 2>&1) && [[ $out = "$VERSION" ]]; then
        ok "stunturn-agent --version: $out"
    else
        bad "stunturn-agent --version: $out"
        exit 1   # nothing below can pass
    fi
    if [[ -n ${EXPECT_DEB_BIN:-} ]]; then
        if out=$(timeout 10 "$EXPECT_DEB_BIN" --version 2>&1) && [[ $out = "$VERSION" ]]; then
            ok "the .deb's /usr/bin/stunturn-agent --version: $out"
        else bad "the .deb's /usr/bin/stunturn-agent --version: $out"; fi
    fi
    keys=()
    for i in 1 2 3 4 5 6; do keys+=("$(timeout 10 "$BIN" keygen 2>/dev/null || true)"); done
    if [[ ${keys[0]} =~ ^[[:graph:]]{16,}$ && ${keys[0]} != "${keys[1]}" ]]; then
        ok "keygen: ${#keys[0]}-character keys, different each time"
    else
        bad "keygen printed '${keys[0]}' then '${keys[1]}'"
    fi

    # check: the examples as a user makes them, keys put in.
    mkdir -p conf/examples
    cp "$SRC/config.yaml.example" conf/config.yaml
    cp "$SRC"/examples/*.yaml conf/examples/
    sed -i "s/REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen/${keys[0]}/" conf/config.yaml
    if out=$(timeout 10 "$BIN" check --config conf/config.yaml 2>&1) && grep -q ": OK$" <<<"$out"; then
        ok "check config.yaml.example with a key put in"
    else bad "check config.yaml.example with a key put in: $out"; fi
    for f in conf/examples/*.yaml; do
        sed -i "s/REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen/${keys[2]}/" "$f"
        for i in 1 2 3 4 5; do sed -i "s/REPLACE-WITH-KEY-$i\$/${keys[i]}/" "$f"; done
        if out=$(timeout 10 "$BIN" check "$f" 2>&1) && grep -q ": OK$" <<<"$out"; then
            ok "check examples/$(basename "$f") with keys put in"
        else bad "check examples/$(basename "$f"): $out"; fi
    done
    # The layout the systemd unit reads: /etc/stunturn (750) with the config and the key file it
    # names by a path relative to itself (640), root's and the group stunturn's.
    mkdir -p etc-stunturn
    printf '%s\n' "${keys[3]}" > etc-stunturn/home-ssh.key
    sed "s/^    key: .*/    key_file: home-ssh.key/" conf/examples/expose-ssh.yaml > etc-stunturn/agent.yaml
    chmod 750 etc-stunturn && chmod 640 etc-stunturn/*
    if out=$(timeout 10 "$BIN" check --config etc-stunturn/agent.yaml 2>&1) && grep -q ": OK$" <<<"$out" \
        && grep -q "key_file" etc-stunturn/agent.yaml && ! grep -q "^warning" <<<"$out"; then
        ok "check a config whose key is in a key_file beside it (mode 640)"
    else bad "check with key_file: $out"; fi
    # What the unit's DynamicUser= meets: a user of no account, in the group stunturn (here gid
    # 61935) and no other, reads them; without the group it is refused, and says so.
    if command -v setpriv >/dev/null 2>&1; then
        chgrp -R 61935 etc-stunturn
        as_service() { setpriv --reuid=61934 --regid=61934 "$@"; }
        if out=$(as_service --groups=61935 -- timeout 10 "$BIN" check --config "$WORK/etc-stunturn/agent.yaml" 2>&1) \
            && grep -q ": OK$" <<<"$out"; then
            ok "a dynamic user in the config's group checks it and its key_file (750/640)"
        else bad "check as a dynamic user in the config's group: $out"; fi
        chmod 755 etc-stunturn
        if out=$(as_service --clear-groups -- timeout 10 "$BIN" check --config "$WORK/etc-stunturn/agent.yaml" 2>&1); then
            bad "a user outside the group read the config: $out"
        elif grep -q "permission denied" <<<"$out"; then
            ok "a user outside the group is refused, and told: ${out%%$'\n'*}"
        else bad "a user outside the group is refused, but not told why: $out"; fi
    fi
    cp "$SRC/config.yaml.example" conf/placeholder.yaml
    if out=$(timeout 10 "$BIN" check conf/placeholder.yaml 2>&1); then
        bad "check accepted the example's placeholder key"
    else ok "check refuses the placeholder key (exit $?)"; fi

    # The systemd units, with the binary where they name it: an overlay on its folder, in this
    # namespace only (where overlays cannot be mounted, a copy naming a path of ours instead).
    if command -v systemd-analyze >/dev/null 2>&1; then
        mkdir -p unit-bin && cp "$BIN" unit-bin/stunturn-agent
        for unit in $UNITS; do
            exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
            # A mount namespace of its own for each, so the overlay goes with it.
            out=$(cd / && unshare --mount sh -c '
                if mount -t overlay stunturn-unit-bin -o "lowerdir=$1:$(dirname "$2")" "$(dirname "$2")" 2>/dev/null; then
                    systemd-analyze verify "$3"
                else
                    sed "s#$2#$1/stunturn-agent#g" "$3" > "$1/../unit-copy.service"
                    systemd-analyze verify "$1/../unit-copy.service"
                fi' sh "$WORK/unit-bin" "$exe" "$unit" 2>&1) && rc=0 || rc=$?
            if [[ $rc = 0 && -z $out ]]; then ok "systemd-analyze verify ${unit#"$WORK"/} (binary at $exe)"
            else bad "systemd-analyze verify $unit (exit $rc): $out"; fi
        done
    else
        echo "note: systemd-analyze not installed; the unit file was not verified"
    fi

    # End to end on 127.0.0.1: echo service <- forward --expose <- server -> the listen side <- client.
    # The listen side runs as the systemd unit runs it: 'run --config' with a key_file, its admin
    # socket in $XDG_RUNTIME_DIR/stunturn, where 'status' and 'reload' (the unit's ExecReload=) find it.
    read -r P_SERVER P_SERVICE P_LISTEN P_LISTEN2 < <(py free-ports 4)
    printf '%s\n' "${keys[4]}" > e2e.key && chmod 600 e2e.key
    mkdir -m 700 runtime
    listen_config() {  # the forwards' names and ports
        printf 'server: 127.0.0.1:%s\nforwards:\n' "$P_SERVER"
        while [[ $# -gt 0 ]]; do
            printf '  - name: %s\n    listen: 127.0.0.1:%s\n    key_file: e2e.key\n' "$1" "$2"; shift 2
        done
    }
    listen_config web-local "$P_LISTEN" > listen.yaml
    py echo-server "$P_SERVICE" > echo.log 2>&1 & pids+=($!)
    "$BIN" server --listen "127.0.0.1:$P_SERVER" > server.log 2>&1 & pids+=($!)
    "$BIN" forward --expose "127.0.0.1:$P_SERVICE" --key-file e2e.key --server "127.0.0.1:$P_SERVER" \
        --admin none > expose.log 2>&1 & pids+=($!)
    XDG_RUNTIME_DIR="$WORK/runtime" "$BIN" run --config "$WORK/listen.yaml" > listen.log 2>&1 & pids+=($!)
    listen_pid=$!
    agent() { XDG_RUNTIME_DIR="$WORK/runtime" timeout 20 "$BIN" "$@"; }
    if out=$(py client "$P_LISTEN" 1048576 30 2>&1); then
        ok "end to end: $out"
    else
        bad "end to end: $out"
        for log in server expose listen echo; do echo "--- $log.log"; tail -n 20 "$log.log"; done
    fi
    if out=$(agent status --json 2>&1) && summary=$(py status-check 1048576 <<<"$out" 2>&1); then
        ok "status --json (socket found through XDG_RUNTIME_DIR): $summary"
    else bad "status --json: ${summary:-} $out"; fi
    # reload, as 'systemctl reload' runs it: a forward added, nothing else touched or named.
    listen_config web-local "$P_LISTEN" web-local2 "$P_LISTEN2" > listen.yaml
    if out=$(agent reload 2>&1) && grep -q '"added":\["web-local2"\]' <<<"$out" && grep -q '"needs_restart":\[\]' <<<"$out" \
        && grep -q '"unchanged":\["web-local"\]' <<<"$out"; then
        ok "reload adds a forward and leaves the other alone: $out"
    else bad "reload: $out"; fi
    if out=$(py client "$P_LISTEN2" 65536 30 2>&1); then ok "the reloaded forward carries bytes: $out"
    else bad "the reloaded forward: $out"; fi
    echo "forwards: [" > listen.yaml
    if out=$(agent reload 2>&1); then bad "reload took an invalid file: $out"
    elif out2=$(py client "$P_LISTEN" 65536 10 2>&1); then
        ok "reload refuses an invalid file (exit 1), and the forwards go on: ${out%%$'\n'*}"
    else bad "after a refused reload the forward no longer works: $out2"; fi
    kill -TERM "$listen_pid"
    if timeout 15 tail --pid="$listen_pid" -f /dev/null; then ok "run exits on SIGTERM"
    else bad "run still running 15 s after SIGTERM"; fi
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# The outer part: find the packages, check them, set up and enter the namespaces.
# ---------------------------------------------------------------------------------------------
DIST="$ROOT/.build-package/dist"
BINARY=""
TIMEOUT=120
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dist) DIST=$(realpath -m "$2"); shift 2 ;;
        --binary) BINARY=$(realpath -m "$2"); shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "test-package.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if [[ $(id -u) != 0 ]] || ! command -v unshare >/dev/null 2>&1; then
    echo "test-package.sh: skipped: needs root and unshare (util-linux) to hide the toolchain in a private mount namespace"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "test-package.sh: needs python3 (echo service and client)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/stunturn-test-package.XXXXXX")
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

passed=0; failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

VERSION=$(sed -n 's/^let stunturnVersion = "\(.*\)"$/\1/p' "$ROOT/Sources/stunturn-agent/StunturnAgent.swift")
SRC="$ROOT"
UNITS=""
EXPECT_DEB_BIN=""
if [[ -z $BINARY ]]; then
    TARBALL=$(ls "$DIST"/stunturn-agent-*-linux-*.tar.gz 2>/dev/null | head -1 || true)
    DEB=$(ls "$DIST"/stunturn-agent_*.deb 2>/dev/null | head -1 || true)
    [[ -f $TARBALL && -f $DEB ]] || { echo "test-package.sh: no tarball and .deb in $DIST; run scripts/package.sh first" >&2; exit 1; }
    VERSION=$(basename "$DEB" | cut -d_ -f2)
    echo "== $(basename "$TARBALL"), $(basename "$DEB")"

    # The tarball: one folder with the binary, the docs, the examples and the unit.
    NAME=$(basename "$TARBALL" .tar.gz)
    listing=$(tar -tzf "$TARBALL" | sort)
    expected=$(printf '%s\n' "$NAME/" "$NAME/README.md" "$NAME/config.yaml.example" "$NAME/examples/" \
        "$NAME/examples/systemd/" "$NAME/stunturn-agent" \
        $(cd "$ROOT" && ls examples/*.yaml examples/systemd/*.service | sed "s#^#$NAME/#") | sort)
    if [[ $listing = "$expected" ]]; then ok "tarball holds the binary, README.md, config.yaml.example, examples/*.yaml and the units"
    else bad "tarball contents differ: $(diff <(echo "$expected") <(echo "$listing") | grep '^[<>]' | tr '\n' ' ')"; fi
    tar -xzf "$TARBALL" -C "$WORK"
    SRC="$WORK/$NAME"
    BINARY="$SRC/stunturn-agent"
    owners=$(tar -tvzf "$TARBALL" | awk '{print $2}' | sort -u)
    if [[ $owners = "0/0" ]]; then ok "tarball entries owned by 0/0"; else bad "tarball owners: $owners"; fi

    # The .deb: control fields, owners, layout.
    info=$(dpkg-deb --field "$DEB")
    field() { sed -n "s/^$1: //p" <<<"$info"; }
    if [[ $(field Package) = stunturn-agent && $(field Version) = "$VERSION" \
          && $(field Architecture) = "$(dpkg --print-architecture)" && $(field Depends) == *libc6* ]]; then
        ok ".deb control: stunturn-agent $(field Version) $(field Architecture), Depends: $(field Depends)"
    else bad ".deb control: $info"; fi
    contents=$(dpkg-deb --contents "$DEB")
    if [[ -z $(awk '$2 != "root/root"' <<<"$contents") ]]; then ok ".deb files all root/root"
    else bad ".deb files not owned by root: $(awk '$2 != "root/root"' <<<"$contents")"; fi
    DEB_ROOT="$WORK/debroot"
    dpkg -x "$DEB" "$DEB_ROOT"
    layout_ok=1
    check_mode() {  # path mode
        local m
        m=$(stat -c %a "$DEB_ROOT/$1" 2>/dev/null) || { bad ".deb lacks /$1"; layout_ok=0; return; }
        [[ $m = "$2" ]] || { bad ".deb /$1 has mode $m, not $2"; layout_ok=0; }
    }
    check_mode usr/bin/stunturn-agent 755
    for f in "$ROOT"/examples/systemd/*.service; do check_mode "lib/systemd/system/$(basename "$f")" 644; done
    check_mode usr/share/doc/stunturn-agent/copyright 644
    check_mode usr/share/doc/stunturn-agent/README.md 644
    check_mode usr/share/doc/stunturn-agent/config.yaml.example 644
    for f in "$ROOT"/examples/*.yaml; do check_mode "usr/share/doc/stunturn-agent/examples/$(basename "$f")" 644; done
    stray=$(cd "$DEB_ROOT" && find . -type f | grep -v -e '^./usr/bin/stunturn-agent$' -e '^./lib/systemd/system/stunturn-[a-z]*.service$' \
        -e '^./usr/share/doc/stunturn-agent/' || true)
    [[ -z $stray ]] || { bad ".deb has files outside the layout: $stray"; layout_ok=0; }
    [[ $layout_ok = 0 ]] || ok ".deb layout: /usr/bin, /lib/systemd/system, /usr/share/doc/stunturn-agent (copyright, README, examples)"
    if cmp -s "$DEB_ROOT/usr/bin/stunturn-agent" "$BINARY"; then ok ".deb and tarball carry the same binary"
    else bad ".deb and tarball binaries differ"; fi
    UNITS=""
    for example in "$SRC"/examples/systemd/*.service; do
        unit="$DEB_ROOT/lib/systemd/system/$(basename "$example")"
        if grep -q '^ExecStart=/usr/bin/stunturn-agent ' "$unit" && ! grep -q '^Exec.*/usr/local/bin' "$unit" \
            && diff -q <(sed 's#/usr/local/bin/stunturn-agent#/usr/bin/stunturn-agent#g' "$example") "$unit" >/dev/null; then
            ok ".deb $(basename "$unit") is the example's, with /usr/bin"
        else bad ".deb $(basename "$unit"): $(grep '^Exec' "$unit" | tr '\n' ' ')"; fi
        UNITS="$UNITS $example $unit"
    done
    scripts_ok=1
    for s in postinst prerm postrm; do
        dpkg-deb --ctrl-tarfile "$DEB" | tar -x -C "$WORK" "./$s" 2>/dev/null && sh -n "$WORK/$s" \
            || { bad ".deb $s missing or not valid sh"; scripts_ok=0; }
    done
    if [[ $scripts_ok = 1 ]] && grep -q 'groupadd --system stunturn' "$WORK/postinst" \
        && grep -q 'install -d -m 0750 -o root -g stunturn /etc/stunturn' "$WORK/postinst"; then
        ok ".deb postinst makes the group stunturn and /etc/stunturn (750); prerm and postrm are valid sh"
    else bad ".deb postinst does not make the group stunturn and /etc/stunturn"; fi
    EXPECT_DEB_BIN="$DEB_ROOT/usr/bin/stunturn-agent"
fi
[[ -x $BINARY ]] || { echo "test-package.sh: no executable at $BINARY" >&2; exit 1; }
[[ -n $UNITS ]] || UNITS=$(echo "$ROOT"/examples/systemd/*.service)

# What the binary asks the dynamic loader for, before anything is hidden.
runpath=$(readelf -d "$BINARY" | sed -n 's/.*(\(RPATH\|RUNPATH\)).*\[\(.*\)\]/\2/p')
echo "== $BINARY: $(stat -c %s "$BINARY") bytes; needs $(readelf -d "$BINARY" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')${runpath:+; runpath $runpath}"

# The toolchain's folders: swift's install prefix, the runpath of toolchain-linked binaries, and
# any folder of the loader's cache that holds a Swift runtime.
MASKS=""
CONTROLS=""
add_mask() {
    local d
    d=$(readlink -f "$1" 2>/dev/null) || return 0
    [[ -d $d ]] || return 0
    case "$d" in  # never a system folder itself
        /|/usr|/usr/local|/opt|/bin|/sbin|/lib|/lib32|/lib64|/usr/bin|/usr/sbin|/usr/lib|/usr/lib32|/usr/lib64|/usr/lib/"$(uname -m)"-linux-gnu|/lib/"$(uname -m)"-linux-gnu) return 0 ;;
    esac
    for m in $MASKS; do [[ $d = "$m" || $d = "$m"/* ]] && return 0; done
    MASKS="$MASKS $d"
}
if SWIFT=$(command -v swift); then
    add_mask "$(dirname "$(dirname "$(readlink -f "$SWIFT")")")"
    printf 'print("hello")\n' > "$WORK/hello.swift"
    if swiftc "$WORK/hello.swift" -o "$WORK/hello" 2>/dev/null; then
        CONTROLS="$WORK/hello"
        for d in $(readelf -d "$WORK/hello" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p' | tr ':' ' '); do add_mask "$d"; done
    fi
fi
for lib in $(ldconfig -p 2>/dev/null | awk '/libswiftCore\.so/ {print $NF}'); do add_mask "$(dirname "$lib")"; done
for d in $(tr ':' ' ' <<<"$runpath"); do [[ $d = '$ORIGIN'* ]] || add_mask "$d"; done
if [[ -z $MASKS ]]; then echo "note: no Swift toolchain on this machine; nothing to hide"; fi
echo "== hiding:${MASKS:- nothing}"

cat > "$WORK/helper.py" <<'EOF'
import fcntl, hashlib, os, socket, struct, sys, threading, time

def lo_up():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14s", b"lo", 0, bytes(14))))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, bytes(14)))

def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))

def echo_server(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    def serve(c):
        with c:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def client(port, size, timeout):
    deadline = time.monotonic() + timeout
    payload = os.urandom(size)
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.settimeout(10)
            c.sendall(b"ping")
            if c.recv(4) != b"ping":
                raise OSError("no echo of the first bytes")
            start = time.monotonic()
            sender = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)))
            sender.start()
            got = bytearray()
            while True:
                data = c.recv(65536)
                if not data:
                    break
                got += data
            sender.join()
            c.close()
            took = time.monotonic() - start
            if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
                sys.exit(f"{len(got)} of {size} bytes came back, and not the same")
            print(f"{size} bytes through the tunnel and back intact in {took * 1000:.0f} ms "
                  f"(the first echo {(start - (deadline - timeout)) * 1000:.0f} ms after the client started)")
            return
        except OSError as e:
            last = str(e) or type(e).__name__
            time.sleep(0.25)
    sys.exit(f"no echo through the tunnel within {timeout} s (last: {last})")

def status_check(size):
    import json
    answer = json.load(sys.stdin)
    if "agents" in answer:  # status without --admin: every agent found
        (answer,) = answer["agents"]
    (forward,) = answer["forwards"]
    if forward["state"] != "up" or forward["mode"] != "listen" or forward["bytes_out"] < size or forward["bytes_in"] < size:
        sys.exit(f"state {forward['state']}, {forward['bytes_out']} bytes out, {forward['bytes_in']} in")
    print(f"the listen forward is {forward['state']} on path {forward['path']}, "
          f"{forward['bytes_out']} bytes out and {forward['bytes_in']} in, {forward['connections']} connection(s)")

cmd = sys.argv[1]
if cmd == "lo-up": lo_up()
elif cmd == "free-ports": free_ports(int(sys.argv[2]))
elif cmd == "echo-server": echo_server(int(sys.argv[2]))
elif cmd == "status-check": status_check(int(sys.argv[2]))
elif cmd == "client": client(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
EOF

export WORK BIN="$BINARY" VERSION MASKS CONTROLS UNITS EXPECT_DEB_BIN SRC
inner_rc=0
inner_out=$(timeout -k 5 "$TIMEOUT" unshare --mount --net --pid --fork --mount-proc --kill-child \
    bash "${BASH_SOURCE[0]}" --inner 2>&1) || inner_rc=$?
# Fold the inner counts into ours; print its lines but its closing one.
grep -v '^package: ' <<<"$inner_out" || true
if line=$(grep '^package: ' <<<"$inner_out" | tail -1); then
    passed=$((passed + $(sed 's/package: \([0-9]*\) passed.*/\1/' <<<"$line")))
    failed=$((failed + $(sed 's/.* \([0-9]*\) failed.*/\1/' <<<"$line")))
fi
if [[ $inner_rc = 124 || $inner_rc = 137 ]]; then bad "the namespace checks did not finish within $TIMEOUT s"; fi
if [[ $inner_rc != 0 && $failed = 0 ]]; then bad "the namespace checks exited $inner_rc"; fi
echo "package: $passed passed, $failed failed"
[[ $failed = 0 ]]
