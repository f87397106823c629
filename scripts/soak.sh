#!/usr/bin/env bash
# Soak: the agents in the NAT lab for MINUTES (default 10) under steady traffic, with faults along
# the way; prints what happened and exits non-zero when a requirement fails. See
# docs/RELIABILITY.md.
#
#   scripts/soak.sh [MINUTES]
#
# Lab: pair topology, eim-apdf on both sides, 2 % loss on the internet. One exposed echo service
# (peer-b) behind one expose agent; two listen agents on peer-a for it: 127.0.0.1:7001 with the
# default relay policy (direct), 127.0.0.1:7002 with --relay only (relayed through the server).
# Traffic (scripts/natlab/soak_traffic.py): 100 connections at once, 90 bulk ones of random
# sizes (1 KiB-2 MiB, each sending at most 64 KiB/s) ending by FIN, by half-close, by the
# client's reset or by the service's, and 10 interactive ones (64-byte echoes every 200 ms, timed);
# every echoed byte is checked. A probe opens a new connection on each forward every 0.5 s
# (5 s for its echo at most).
# Faults, spaced evenly over the run, in this order and repeated every 12 minutes of run:
#   server-restart   the signaling server (and relay) is stopped and started again
#   relay-cut        the server's TCP connections are killed (ss -K) and new ones refused with a
#                    reset for 5 s
#   nat-flush        conntrack -F on one NAT router (nat-a, then nat-b on the next round)
#   service-restart  the exposed service is stopped (it resets what it has open) and started
#                    again 2 s later
# Requirements: 0 corrupted bytes; no connection cut silently (an EOF before the whole echo) or
# stalled; after each fault new connections work again within 60 s on both forwards; each forward
# agent's RSS grows at most 10 % from minute 2 to the end; each forward agent's open descriptors
# return to their count before the traffic.
#
# Environment: STUNTURN_AGENT (default .build/debug/stunturn-agent), SOAK_LOGDIR (default
# /tmp/soak-logs), NATLAB_PREFIX (default sts-, so the soak's namespaces are its own).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MINUTES=${1:-10}
[[ $MINUTES =~ ^[0-9]+$ && $MINUTES -ge 3 ]] || { echo "usage: scripts/soak.sh [MINUTES] (whole minutes, at least 3)" >&2; exit 2; }
AGENT=${STUNTURN_AGENT:-$ROOT/.build/debug/stunturn-agent}
export NATLAB_PREFIX=${NATLAB_PREFIX:-sts-}
LOGDIR=${SOAK_LOGDIR:-/tmp/soak-logs}
NATLAB="$ROOT/scripts/natlab.sh"
TRAFFIC="$ROOT/scripts/natlab/soak_traffic.py"
SERVER=203.0.113.10:3478
SERVICE_PORT=7000
DIRECT_PORT=7001
RELAY_PORT=7002
# How long after a fault new connections may take to work again, and RSS growth allowed.
RECOVERY_LIMIT=60
RSS_GROWTH_LIMIT=10

ns() { echo "${NATLAB_PREFIX}$1"; }
nx() { local node=$1; shift; ip netns exec "$(ns "$node")" "$@"; }
say() { echo "soak: $(date +%H:%M:%S) $*" >&2; }

PIDS=()
cleanup() {
    local pid
    [[ -n ${SAMPLER_PID:-} ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    bash "$NATLAB" down
}

spawn() {  # node logfile cmd... ; sets SPAWNED
    local node=$1 logfile=$2; shift 2
    ip netns exec "$(ns "$node")" "$@" >>"$logfile" 2>&1 </dev/null &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

wait_until() {  # seconds cmd...
    local limit=$1 i; shift
    for ((i = 0; i < limit * 10; i++)); do "$@" && return 0; sleep 0.1; done
    return 1
}
port_open() { [[ -n $(nx "$1" ss -Hltn "sport = :$2" 2>/dev/null) ]]; }

start_server() {
    spawn pub "$LOGDIR/server.log" "$AGENT" server --listen "$SERVER" --admin "$LOGDIR/server.sock"
    SERVER_PID=$SPAWNED
    echo "$SERVER_PID" >"$LOGDIR/server.pid"
    wait_until 10 port_open pub 3478 || say "server did not open its port within 10 s"
}

start_service() {
    spawn peer-b "$LOGDIR/service.log" python3 "$TRAFFIC" service "$SERVICE_PORT"
    SERVICE_PID=$SPAWNED
    wait_until 10 port_open peer-b "$SERVICE_PORT" || say "service did not open its port within 10 s"
}

# RSS (kB) and open descriptors of each agent every 10 s: "seconds role pid rss fds".
sample() {
    local t0=$1 role pid
    while true; do
        for role in expose listen-direct listen-relay server; do
            case $role in
                expose) pid=$EXPOSE_PID ;;
                listen-direct) pid=$DIRECT_PID ;;
                listen-relay) pid=$RELAY_PID ;;
                server) pid=$(cat "$LOGDIR/server.pid" 2>/dev/null || echo 0) ;;
            esac
            [[ -d /proc/$pid ]] || continue
            echo "$(( $(date +%s) - t0 )) $role $pid $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) $(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"
        done >>"$LOGDIR/samples.txt"
        sleep 10
    done
}

fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
sockets() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
# An agent's descriptors by kind: "socket=3 pipe=1 anon_inode:[eventpoll]=4 file=2".
fd_kinds() {
    local f
    for f in /proc/"$1"/fd/*; do readlink "$f" 2>/dev/null || true; done \
        | sed -E 's/:\[[0-9]+\]$//; s/^\/.*/file/' | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }'
}

fault() {  # name
    local name=$1 start note=""
    start=$(date +%s.%N)
    case $name in
        server-restart)
            kill -TERM "$SERVER_PID" 2>/dev/null || true
            wait_until 10 bash -c "! kill -0 $SERVER_PID 2>/dev/null" || kill -KILL "$SERVER_PID" 2>/dev/null || true
            wait "$SERVER_PID" 2>/dev/null || true
            start_server
            note="new pid $SERVER_PID" ;;
        relay-cut)
            local killed
            nx pub iptables -I INPUT -p tcp --dport 3478 -j REJECT --reject-with tcp-reset
            killed=$(nx pub ss -HtnK state established "( sport = :3478 )" 2>/dev/null | wc -l || true)
            sleep 5
            nx pub iptables -D INPUT -p tcp --dport 3478 -j REJECT --reject-with tcp-reset
            note="$killed server connections killed, new ones refused for 5 s" ;;
        nat-flush)
            local router=nat-a entries
            (( FLUSHES % 2 == 1 )) && router=nat-b
            FLUSHES=$((FLUSHES + 1))
            entries=$(nx "$router" conntrack -C 2>/dev/null || echo "?")
            nx "$router" conntrack -F >/dev/null 2>&1 || true
            note="conntrack -F on $router ($entries entries)" ;;
        service-restart)
            kill -TERM "$SERVICE_PID" 2>/dev/null || true
            wait_until 10 bash -c "! kill -0 $SERVICE_PID 2>/dev/null" || kill -KILL "$SERVICE_PID" 2>/dev/null || true
            wait "$SERVICE_PID" 2>/dev/null || true
            sleep 2
            start_service
            note="down about 2 s" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$start" "$(date +%s.%N)" "$note" >>"$LOGDIR/faults.tsv"
    say "fault $name: $note"
}

main() {
    [[ -x $AGENT ]] || { echo "soak: agent $AGENT is missing: run swift build first" >&2; exit 2; }
    local why tool
    why=$(bash "$NATLAB" check --agent "$AGENT") || { echo "soak: the NAT lab cannot run here: $why" >&2; exit 2; }
    for tool in conntrack ss; do
        command -v "$tool" >/dev/null 2>&1 || { echo "soak: '$tool' is not installed" >&2; exit 2; }
    done
    rm -rf "$LOGDIR"; mkdir -p "$LOGDIR"
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    bash "$NATLAB" up --nat-a eim-apdf --nat-b eim-apdf --loss 2 2>"$LOGDIR/up.log"
    local key
    key=$(python3 -c 'import uuid; print(uuid.uuid4())')
    local common=(--key "$key" --server "$SERVER")
    start_server
    start_service
    spawn peer-b "$LOGDIR/expose.log" "$AGENT" forward --expose "127.0.0.1:$SERVICE_PORT" "${common[@]}" --admin "$LOGDIR/expose.sock"
    EXPOSE_PID=$SPAWNED
    sleep 1
    spawn peer-a "$LOGDIR/listen-direct.log" "$AGENT" forward --listen "127.0.0.1:$DIRECT_PORT" "${common[@]}" --admin "$LOGDIR/listen-direct.sock"
    DIRECT_PID=$SPAWNED
    spawn peer-a "$LOGDIR/listen-relay.log" "$AGENT" forward --listen "127.0.0.1:$RELAY_PORT" "${common[@]}" --relay only --admin "$LOGDIR/listen-relay.sock"
    RELAY_PID=$SPAWNED
    nx peer-a timeout 60 python3 "$TRAFFIC" ready "$DIRECT_PORT,$RELAY_PORT" 45 \
        || { echo "soak: the forwards did not work within 45 s (logs in $LOGDIR)" >&2; exit 1; }
    sleep 5
    local base_expose base_direct base_relay
    base_expose=$(sockets "$EXPOSE_PID"); base_direct=$(sockets "$DIRECT_PID"); base_relay=$(sockets "$RELAY_PID")
    printf 'expose %s\nlisten-direct %s\nlisten-relay %s\n' "$(fd_kinds "$EXPOSE_PID")" "$(fd_kinds "$DIRECT_PID")" \
        "$(fd_kinds "$RELAY_PID")" >"$LOGDIR/fds-before.txt"
    say "forwards up; sockets before traffic: expose $base_expose, listen-direct $base_direct, listen-relay $base_relay"

    local seconds=$((MINUTES * 60)) t0 clients_pid
    t0=$(date +%s)
    echo "$t0" >"$LOGDIR/start.txt"
    spawn peer-a "$LOGDIR/clients.log" python3 "$TRAFFIC" clients --ports "$DIRECT_PORT,$RELAY_PORT" --seconds "$seconds" \
        --out "$LOGDIR/traffic.json"
    clients_pid=$SPAWNED
    sample "$t0" &
    SAMPLER_PID=$!
    say "traffic for $MINUTES min; logs in $LOGDIR"

    # Faults spaced evenly; one round of the four for every 12 minutes of run.
    local names=(server-restart relay-cut nat-flush service-restart) rounds count spacing i at
    rounds=$(( MINUTES / 12 )); (( rounds < 1 )) && rounds=1
    count=$(( rounds * 4 )); spacing=$(( seconds / (count + 1) ))
    FLUSHES=0
    : >"$LOGDIR/faults.tsv"
    for ((i = 0; i < count; i++)); do
        at=$(( t0 + (i + 1) * spacing ))
        while (( $(date +%s) < at )); do
            kill -0 "$clients_pid" 2>/dev/null || break 2
            sleep 1
        done
        fault "${names[i % 4]}"
    done

    # The clients stop starting connections at the end; those in flight finish within their
    # stall limit.
    local waited=0
    while kill -0 "$clients_pid" 2>/dev/null && (( waited < seconds + 300 )); do sleep 1; waited=$((waited + 1)); done
    kill "$SAMPLER_PID" 2>/dev/null || true
    [[ -s $LOGDIR/traffic.json ]] || { echo "soak: the traffic clients left no report (see $LOGDIR/clients.log)" >&2; exit 1; }

    # Sockets back to where they were before the traffic (streams closed), within 2 minutes.
    local end_expose end_direct end_relay
    for ((waited = 0; waited < 120; waited++)); do
        end_expose=$(sockets "$EXPOSE_PID"); end_direct=$(sockets "$DIRECT_PID"); end_relay=$(sockets "$RELAY_PID")
        (( end_expose <= base_expose && end_direct <= base_direct && end_relay <= base_relay )) && break
        sleep 1
    done
    say "sockets after the traffic ($waited s later): expose $end_expose, listen-direct $end_direct, listen-relay $end_relay"
    printf 'expose %s\nlisten-direct %s\nlisten-relay %s\n' "$(fd_kinds "$EXPOSE_PID")" "$(fd_kinds "$DIRECT_PID")" \
        "$(fd_kinds "$RELAY_PID")" >"$LOGDIR/fds-after.txt"
    local role
    for role in expose listen-direct listen-relay server; do
        "$AGENT" status --admin "$LOGDIR/$role.sock" --json >"$LOGDIR/status-$role.json" 2>/dev/null || true
    done
    local alive=""
    for role in expose:$EXPOSE_PID listen-direct:$DIRECT_PID listen-relay:$RELAY_PID server:$SERVER_PID; do
        kill -0 "${role#*:}" 2>/dev/null && alive+="${role%%:*}=alive " || alive+="${role%%:*}=EXITED "
    done
    echo "$alive" >"$LOGDIR/alive.txt"

    python3 "$TRAFFIC" report --dir "$LOGDIR" --minutes "$MINUTES" --recovery-limit "$RECOVERY_LIMIT" \
        --rss-growth-limit "$RSS_GROWTH_LIMIT" | tee "$LOGDIR/report.txt"
}

main
