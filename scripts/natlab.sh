#!/usr/bin/env bash
# NAT lab: two peers behind simulated NAT routers, a public signaling server, built from Linux
# network namespaces, driving the real stunturn-agent. See docs/NATLAB.md.
set -euo pipefail

# Test runners may start us with SIGTERM/SIGINT blocked, and children inherit that: then no
# cleanup trap fires and no kill -TERM lands. Re-exec once with a clear mask and default handlers.
if [[ -z ${NATLAB_SIGNALS_RESET:-} ]] && command -v python3 >/dev/null 2>&1; then
    export NATLAB_SIGNALS_RESET=1
    exec python3 -c 'import os, signal, sys
signal.pthread_sigmask(signal.SIG_SETMASK, [])
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE): signal.signal(s, signal.SIG_DFL)
os.execvp("bash", ["bash"] + sys.argv[1:])' "$0" "$@"
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX="${NATLAB_PREFIX:-stl-}"
NODES=(inet pub nat-a nat-b peer-a peer-b)   # the topology being built; see topology_nodes
ALL_NODES=(inet pub nat-a nat-b nat cgn home-a home-b peer-a peer-b)
TOPOLOGY=pair
SERVER_IP=203.0.113.10
SERVER_PORT=3478
SERVICE_PORT=7000   # the exposed service, on peer-b's loopback
LISTEN_PORT=7001    # the forward's local port, on peer-a's loopback
LOG_ROOT="${NATLAB_LOGDIR:-/tmp/natlab-logs}"
DELAY_QUEUE=7       # NFQUEUE number the delayer binds in inet (queues are per namespace)
NAT_B_PUBLIC=198.51.100.130

usage() {
    cat <<'EOF'
usage: natlab.sh COMMAND [options]

  up [--topology pair|lan|cgnat] [--nat-a KIND] [--nat-b KIND] [--router drop|answer]
     [--loss PCT] [--delay MS]
        Build the lab (tears down any previous one first). Defaults: pair, eim-apdf, eim-apdf,
        answer, 0, 0.
  down  Remove every namespace the lab made (prefix NATLAB_PREFIX, default "stl-"), and the
        processes in them. Safe to run any number of times.
  exec NODE CMD...
        Run CMD in a node's namespace (a node of the topology that is up, see below).
  check [--agent PATH]
        Print "ok", or one line saying why the lab cannot run here (exit 1).
  case --nat-a KIND --nat-b KIND --proto tcp|udp --agent PATH [--topology pair|lan|cgnat]
       [--router drop|answer] [--loss PCT] [--delay MS] [--punch-timeout S]
       [--relay auto|never|only] [--relay-budget S]
        Bring the lab up, run server (pub), expose (peer-b) and listen (peer-a) agents, push real
        traffic through the forward, print one RESULT line (the outcome, the path the session
        took and the time to the first echoed byte), tear everything down. Exit 0 when the
        outcome is the expected one. --relay goes to the agents (default auto); a relayed session
        must echo the first byte within --relay-budget seconds of the listen agent's start
        (default 3, or 6 with --loss).
  latency --agent PATH [--baseline-agent PATH] [--nat-a KIND] [--nat-b KIND] [--delay MS]
          [--count N]
        On a pair lab with MS ms delay (default 20) per crossing of the internet, eim-apdf on
        both sides unless told otherwise: once the forward works, time N (default 30) new TCP
        connections to the listen port, one after another, each from connect until its first
        byte is echoed back, and the RTT between the two NATs. One line per agent (the baseline
        on a fresh lab, same delay):
        LATENCY agent=current|baseline path= median_ms= p90_ms= rtt_ms= ratio=median/rtt n=
  idle --agent PATH [--nat-a KIND] [--nat-b KIND] [--router drop|answer] [--idle S]
       [--udp-timeout S] [--tcp-timeout S] [--limit S] [--keepalive S]
        Idle NAT time-outs. On a pair lab (eim-apdf both sides unless told otherwise) the NAT
        routers forget UDP mappings after --udp-timeout (default 30) and established TCP ones
        after --tcp-timeout (default 60) seconds (conntrack sysctls in their namespaces). A TCP
        and a UDP forward are set up; after a first echo on each, nothing is sent for --idle
        (default 90) seconds; then the same UDP client socket and a new TCP connection must get
        their echo within --limit (default 2) seconds. --keepalive goes to the agents. Prints
        IDLE udp=ok|late|none udp_echo_s= tcp=... tcp_echo_s= tcp_listen=[path= sessions=]
        udp_flows=N (flows the listen side set up: 1 when the first lasted the pause).
  rebind --agent PATH [--nat-a KIND] [--nat-b KIND] [--router drop|answer] [--hold S]
         [--limit S] [--keepalive S]
        NAT rebinding. Once a TCP forward works, a connection through it sends 64 KiB/s for
        --hold (default 40) seconds, checking every echoed byte; 3 s in, 'conntrack -F' runs on
        both NAT routers. Prints REBIND open_connection=survived|reset|cut|corrupt
        new_connections_s= (from the flush until a new connection's echo; limit --limit,
        default 20) and the listen agent's path and session count before and after. Exit 0
        when the connection survived or was reset (never cut or corrupted) within the limit.
  matrix --agent PATH [--quick] [--punch-timeout S] [--relay auto|never|only]
         [--topologies pair,lan,cgnat]
        Run every case; progress on stderr, markdown tables on stdout, every RESULT line also in
        LOGDIR/matrix-results.txt. --quick: no loss runs, answering routers only.

Topologies (peer-a runs the listen side, peer-b the exposed service):

  pair (default): each peer behind its own router.
    peer-a --- nat-a ---\                  /--- nat-b --- peer-b
                         inet (internet) --
                               |
                              pub (signaling server 203.0.113.10:3478, TCP + STUN/UDP)

  lan: both peers on one LAN (10.1.0.0/24, a bridge in nat) behind one NAT that has no
    hairpin rule; --nat-a is that NAT's kind (eim-apdf or edm). Nodes: inet pub nat peer-a peer-b.
    peer-a 10.1.0.2 --\
                       nat --- inet --- pub
    peer-b 10.1.0.3 --/

  cgnat: each peer behind its own home NAT (--nat-a, --nat-b: eim-apdf or edm), both homes on
    the SAME private range with the SAME host address (192.168.1.2 behind 192.168.1.1), both
    home routers behind one carrier-grade NAT (cgn: eim-apdf, no hairpin rule; homes on
    100.64.1.0/24 and 100.64.2.0/24). Nodes: inet pub cgn home-a home-b peer-a peer-b.
    peer-a --- home-a --\
                         cgn --- inet --- pub
    peer-b --- home-b --/

NAT kinds (RFC 4787 terms), for --nat-a / --nat-b:
  none      No NAT and no filtering: the peer has a public address and the router only routes
            (pair only).
  eim-apdf  Endpoint-Independent Mapping, Address-and-Port-Dependent Filtering ("port-restricted
            cone"): Linux MASQUERADE. It keeps the source port when free (port preservation) and
            reuses it towards every destination; conntrack admits only packets from a remote
            address:port the inside host has sent to.
  edm       Endpoint-Dependent Mapping, i.e. Address-and-Port-Dependent Mapping ("symmetric"):
            MASQUERADE --random-fully gives every new 5-tuple its own random public port; filtering
            is address-and-port-dependent as above.

Router kinds (how every NAT router of the lab treats unsolicited inbound packets):
  answer    Linux default: TCP RST, ICMP port unreachable for UDP.
  drop      Silently discarded.

--loss PCT drops PCT % of packets crossing the internet (iptables statistic). --delay MS holds
every packet the internet router (inet) forwards for MS milliseconds, so peer-to-peer RTT grows
by 2*MS. It uses sch_netem when the kernel has it, else an NFQUEUE rule on inet plus
scripts/natlab/delay.py running in inet (NATLAB_DELAY=netem|nfqueue forces one; default auto).

Expected outcomes (expected_outcome in this script): direct-srflx, direct-host, relay or
fails-cleanly. pair has a direct path to the peer's public address (srflx) unless one side is
edm and the other is not 'none'. In lan the peers reach each other's own address (host
candidate; TCP only). cgnat has no direct path: the carrier NAT does not hairpin, and the
peer's own address is this machine's own. Without a direct path, TCP is relayed through the
signaling server (--relay auto), and so is UDP, which announces no host candidates; a relayed
session must carry traffic within the relay budget. With --relay never, a pairing without a
direct path must fail cleanly: the listen side logs "punch failed" within its punch timeout, and
no agent hangs or spins. A case that works on another path than the expected one fails.
EOF
}

die() { echo "natlab: $*" >&2; exit 2; }
log() { echo "natlab: $*" >&2; }
ns() { echo "${PREFIX}$1"; }
nx() { local node=$1; shift; ip netns exec "$(ns "$node")" "$@"; }

valid_node() { local n; for n in "${ALL_NODES[@]}"; do [[ $n == "$1" ]] && return 0; done; return 1; }
valid_kind() { [[ $1 == none || $1 == eim-apdf || $1 == edm ]]; }
valid_topology() { [[ $1 == pair || $1 == lan || $1 == cgnat ]]; }

topology_nodes() {
    case $1 in
        pair) echo inet pub nat-a nat-b peer-a peer-b ;;
        lan) echo inet pub nat peer-a peer-b ;;
        cgnat) echo inet pub cgn home-a home-b peer-a peer-b ;;
    esac
}

# A peer's own (interface) address: topology side(a|b) kind.
peer_ip() {
    case $1 in
        pair)
            if [[ $2 == a ]]; then [[ $3 == none ]] && echo 203.0.113.66 || echo 10.1.0.2
            else [[ $3 == none ]] && echo 203.0.113.130 || echo 10.2.0.2; fi ;;
        lan) [[ $2 == a ]] && echo 10.1.0.2 || echo 10.1.0.3 ;;
        cgnat) echo 192.168.1.2 ;;
    esac
}

# ---------------------------------------------------------------- expectations

# What the agents can do today. When the product learns more, change these and the expectations
# (here and in Tests/NATLabTests) follow. NATLAB_UDP_RELAY=0 etc. override them for a run.
TCP_RELAY=${NATLAB_TCP_RELAY:-1}                      # TCP sessions may go through the server's relay
UDP_RELAY=${NATLAB_UDP_RELAY:-1}                      # UDP flows may go through the relay too
TCP_HOST_CANDIDATES=${NATLAB_TCP_HOST_CANDIDATES:-1}  # TCP hellos announce interface addresses
UDP_HOST_CANDIDATES=${NATLAB_UDP_HOST_CANDIDATES:-0}

# The direct path the pairing offers: srflx (the peer's public address, punched), host (its own
# address, on a shared network) or nothing. topology proto a b
direct_candidate() {
    local topology=$1 proto=$2 a=$3 b=$4 host=$TCP_HOST_CANDIDATES
    [[ $proto == udp ]] && host=$UDP_HOST_CANDIDATES
    case $topology in
        # An EDM side sends from a port nobody announced; only a NAT-less peer lets that in.
        pair) if [[ $a == edm && $b != none ]] || [[ $b == edm && $a != none ]]; then echo ""; else echo srflx; fi ;;
        # The shared NAT does not hairpin: only the peers' own addresses connect them.
        lan) [[ $host == 1 ]] && echo host || echo "" ;;
        # The carrier NAT does not hairpin, and the peer's own address is this machine's own.
        cgnat) echo "" ;;
    esac
}

# direct-srflx, direct-host, relay or fails-cleanly; "direct-srflx|relay" where either is right.
# topology proto a b [relay-policy [loss]]
# Under loss, a direct path may come up only after relay_after (1 s): a lost SYN is resent after
# TCP's initial 1 s time-out. Then the relay carries the session, as the policy says, so there
# the relay is right too.
expected_outcome() {
    local topology=$1 proto=$2 a=$3 b=$4 policy=${5:-auto} loss=${6:-0} relays=$TCP_RELAY candidate
    [[ $proto == udp ]] && relays=$UDP_RELAY
    [[ $relays == 1 ]] || policy=never
    candidate=$(direct_candidate "$topology" "$proto" "$a" "$b")
    if [[ $policy == only ]]; then
        echo relay
    elif [[ -n $candidate && $policy == auto && $loss -gt 0 ]]; then
        echo "direct-$candidate|relay"
    elif [[ -n $candidate ]]; then
        echo "direct-$candidate"
    elif [[ $policy == auto ]]; then
        echo relay
    else
        echo fails-cleanly
    fi
}

# Whether an outcome is the expected one (or one of the expected ones). outcome expected
outcome_expected() { [[ "|$2|" == *"|$1|"* ]]; }

# Why a pairing has no direct path; empty when it has one. topology proto a b
expected_reason() {
    local topology=$1 proto=$2 a=$3 b=$4
    [[ -z $(direct_candidate "$@") ]] || { echo ""; return 0; }
    case $topology in
        pair)
            if [[ $a == edm && $b == edm ]]; then
                echo "both mappings endpoint-dependent: neither side can learn the port the other sends from"
            else
                echo "edm side sends from an unannounced port that the peer's address-and-port-dependent filter rejects"
            fi ;;
        lan) echo "the shared NAT does not hairpin, and $proto hellos announce no host candidates" ;;
        cgnat) echo "the carrier-grade NAT does not hairpin, and both homes use the same private address" ;;
    esac
}

# ---------------------------------------------------------------- teardown

kill_ns_processes() {
    local name=$1 pids pid tries
    pids=$(ip netns pids "$name" 2>/dev/null || true)
    [[ -z $pids ]] && return 0
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((tries = 0; tries < 20; tries++)); do
        pids=$(ip netns pids "$name" 2>/dev/null || true)
        [[ -z $pids ]] && return 0
        sleep 0.1
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
}

cmd_down() {
    local name
    # Every namespace with the prefix, also ones from an interrupted run with other node names.
    for name in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}" || true); do
        kill_ns_processes "$name"
        ip netns del "$name" 2>/dev/null || true
    done
    return 0
}

# ---------------------------------------------------------------- bring-up

# veth pair made directly between two lab namespaces: no end ever lives in the host's namespace.
link() {
    local n1=$1 if1=$2 n2=$3 if2=$4
    ip -n "$(ns "$n1")" link add "$if1" type veth peer name "$if2" netns "$(ns "$n2")"
    ip -n "$(ns "$n1")" link set "$if1" up
    ip -n "$(ns "$n2")" link set "$if2" up
}

addr() { ip -n "$(ns "$1")" addr add "$3" dev "$2"; }

setup_router() {
    local node=$1 kind=$2 router=$3
    nx "$node" sysctl -qw net.ipv4.ip_forward=1
    case $kind in
        none) return 0 ;;
        eim-apdf) nx "$node" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE ;;
        edm) nx "$node" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully ;;
    esac
    if [[ $router == drop ]]; then
        # Unsolicited packets for the router itself (no mapping) vanish; no RST or ICMP goes out.
        nx "$node" iptables -A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP
        nx "$node" iptables -A FORWARD -i wan -m conntrack --ctstate NEW,INVALID -j DROP
        nx "$node" iptables -A OUTPUT -o wan -p tcp --tcp-flags RST RST -j DROP
        nx "$node" iptables -A OUTPUT -o wan -p icmp --icmp-type destination-unreachable -j DROP
    fi
}

# inet's links, one to pub and one to each router on the internet.
inet_links() { [[ $TOPOLOGY == pair ]] && echo srv wan-a wan-b || echo srv wan-a; }

# Every packet inet forwards waits MS ms, whichever way it goes. Sets DELAY_BY to what does it:
# netem, nfqueue or none. netem delays on egress of each of inet's links, which every forwarded packet
# leaves by exactly once; kernels without sch_netem get the same from NFQUEUE + delay.py.
setup_delay() {  # ms
    local ms=$1 mode=${NATLAB_DELAY:-auto} dev
    [[ $mode == auto || $mode == netem || $mode == nfqueue ]] || die "NATLAB_DELAY must be auto, netem or nfqueue"
    if [[ $mode == auto || $mode == netem ]]; then
        local ok=1
        for dev in $(inet_links); do
            nx inet tc qdisc add dev "$dev" root netem delay "${ms}ms" 2>/dev/null || { ok=0; break; }
        done
        if [[ $ok == 1 ]]; then DELAY_BY=netem; return 0; fi
        for dev in $(inet_links); do nx inet tc qdisc del dev "$dev" root 2>/dev/null || true; done
        [[ $mode == netem ]] && die "--delay: this kernel has no sch_netem (tc qdisc netem)"
    fi
    if start_delayer "$ms"; then DELAY_BY=nfqueue; return 0; fi
    log "delay skipped: no sch_netem and no working NFQUEUE here; the lab runs without added delay"
    DELAY_BY=none
}

# The delayer runs inside inet, so `down` (kill_ns_processes) ends it with the namespace.
# --queue-bypass: while nothing is bound to the queue, packets pass instead of being dropped.
start_delayer() {  # ms
    local ms=$1 logfile="$LOG_ROOT/${PREFIX}delay.log"
    mkdir -p "$LOG_ROOT"
    nx inet iptables -A FORWARD -j NFQUEUE --queue-num "$DELAY_QUEUE" --queue-bypass 2>/dev/null || return 1
    ip netns exec "$(ns inet)" python3 "$SCRIPT_DIR/natlab/delay.py" --queue "$DELAY_QUEUE" --delay-ms "$ms" \
        >"$logfile" 2>&1 </dev/null &
    if ! wait_until 5 delayer_bound; then
        log "delayer did not bind NFQUEUE $DELAY_QUEUE within 5 s: $(tail -n 3 "$logfile" 2>/dev/null | tr '\n' ' ')"
        kill_ns_processes "$(ns inet)"
        nx inet iptables -D FORWARD -j NFQUEUE --queue-num "$DELAY_QUEUE" --queue-bypass 2>/dev/null || true
        return 1
    fi
}

# /proc/net is per namespace: inet's own list of bound queues.
delayer_bound() {
    nx inet awk -v q="$DELAY_QUEUE" '$1 == q { found = 1 } END { exit !found }' /proc/net/netfilter/nfnetlink_queue 2>/dev/null
}

cmd_up() {
    local topology=pair nat_a=eim-apdf nat_b="" router=answer loss=0 delay=0
    while [[ $# -gt 0 ]]; do
        case $1 in
            --topology) topology=$2; shift 2 ;;
            --nat-a) nat_a=$2; shift 2 ;;
            --nat-b) nat_b=$2; shift 2 ;;
            --router) router=$2; shift 2 ;;
            --loss) loss=$2; shift 2 ;;
            --delay) delay=$2; shift 2 ;;
            *) die "up: unknown option $1" ;;
        esac
    done
    valid_topology "$topology" || die "unknown topology '$topology' (pair, lan, cgnat)"
    if [[ -z $nat_b ]]; then [[ $topology == lan ]] && nat_b=$nat_a || nat_b=eim-apdf; fi
    valid_kind "$nat_a" || die "unknown NAT kind '$nat_a' (none, eim-apdf, edm)"
    valid_kind "$nat_b" || die "unknown NAT kind '$nat_b' (none, eim-apdf, edm)"
    if [[ $topology != pair ]] && [[ $nat_a == none || $nat_b == none ]]; then
        die "topology $topology needs NATs: --nat-a/--nat-b eim-apdf or edm"
    fi
    [[ $topology == lan && $nat_b != "$nat_a" ]] && die "topology lan has one NAT: give its kind as --nat-a"
    [[ $router == drop || $router == answer ]] || die "--router must be drop or answer"
    [[ $loss =~ ^[0-9]+$ && $loss -le 100 ]] || die "--loss must be a whole percentage"
    [[ $delay =~ ^[0-9]+$ ]] || die "--delay must be whole milliseconds"

    cmd_down
    TOPOLOGY=$topology
    read -r -a NODES <<<"$(topology_nodes "$topology")"
    local node
    for node in "${NODES[@]}"; do
        ip netns add "$(ns "$node")"
        ip -n "$(ns "$node")" link set lo up
        nx "$node" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
    done

    # Internet: inet routes between the server's and the routers' public links.
    link inet srv pub eth0
    addr inet srv 203.0.113.1/26
    addr pub eth0 "$SERVER_IP/26"
    ip -n "$(ns pub)" route add default via 203.0.113.1
    nx inet sysctl -qw net.ipv4.ip_forward=1
    case $topology in
        pair) up_pair "$nat_a" "$nat_b" "$router" ;;
        lan) up_lan "$nat_a" "$router" ;;
        cgnat) up_cgnat "$nat_a" "$nat_b" "$router" ;;
    esac

    if [[ $loss -gt 0 ]]; then
        local p
        p=$(awk -v l="$loss" 'BEGIN { printf "%.4f", l / 100 }')
        nx inet iptables -A FORWARD -m statistic --mode random --probability "$p" -j DROP
    fi
    DELAY_BY=none
    if [[ $delay -gt 0 ]]; then setup_delay "$delay"; fi

    # Both peers must have a route to the server before anything runs on top.
    for node in peer-a peer-b; do
        nx "$node" ip route get "$SERVER_IP" >/dev/null || die "$node has no route to the server: lab is broken"
    done
    log "up: topology=$topology nat-a=$nat_a nat-b=$nat_b router=$router loss=$loss% delay=${delay}ms ($DELAY_BY) server=$SERVER_IP:$SERVER_PORT"
}

# A router's public link to inet: inet's end (ifname, address/prefix), the router's address/prefix.
wan_link() {  # router inet-ifname inet-address router-address
    link inet "$2" "$1" wan
    addr inet "$2" "$3"
    addr "$1" wan "$4"
    ip -n "$(ns "$1")" route add default via "${3%/*}"
}

# Each peer behind its own router on the internet.
up_pair() {  # nat-a nat-b router
    local nat_a=$1 nat_b=$2 router=$3
    wan_link nat-a wan-a 198.51.100.1/25 198.51.100.2/25
    wan_link nat-b wan-b 198.51.100.129/25 "$NAT_B_PUBLIC/25"

    # LANs: private behind a NAT; public (routed by inet) when the kind is 'none'.
    link nat-a lan peer-a eth0
    link nat-b lan peer-b eth0
    if [[ $nat_a == none ]]; then
        addr nat-a lan 203.0.113.65/26; addr peer-a eth0 203.0.113.66/26
        ip -n "$(ns peer-a)" route add default via 203.0.113.65
        ip -n "$(ns inet)" route add 203.0.113.64/26 via 198.51.100.2
    else
        addr nat-a lan 10.1.0.1/24; addr peer-a eth0 10.1.0.2/24
        ip -n "$(ns peer-a)" route add default via 10.1.0.1
    fi
    if [[ $nat_b == none ]]; then
        addr nat-b lan 203.0.113.129/26; addr peer-b eth0 203.0.113.130/26
        ip -n "$(ns peer-b)" route add default via 203.0.113.129
        ip -n "$(ns inet)" route add 203.0.113.128/26 via "$NAT_B_PUBLIC"
    else
        addr nat-b lan 10.2.0.1/24; addr peer-b eth0 10.2.0.2/24
        ip -n "$(ns peer-b)" route add default via 10.2.0.1
    fi
    setup_router nat-a "$nat_a" "$router"
    setup_router nat-b "$nat_b" "$router"
}

# Both peers on one LAN: a bridge in nat joins their links; nat has no hairpin rule, so a packet
# from the LAN to nat's own public address is answered (or dropped) by nat itself.
up_lan() {  # kind router
    wan_link nat wan-a 198.51.100.1/25 198.51.100.2/25
    link nat lan-a peer-a eth0
    link nat lan-b peer-b eth0
    ip -n "$(ns nat)" link add lan type bridge
    ip -n "$(ns nat)" link set lan-a master lan
    ip -n "$(ns nat)" link set lan-b master lan
    ip -n "$(ns nat)" link set lan up
    addr nat lan 10.1.0.1/24
    addr peer-a eth0 "$(peer_ip lan a "$1")/24"
    addr peer-b eth0 "$(peer_ip lan b "$1")/24"
    ip -n "$(ns peer-a)" route add default via 10.1.0.1
    ip -n "$(ns peer-b)" route add default via 10.1.0.1
    setup_router nat "$1" "$2"
}

# Two homes with the same private range and the same host address, behind one carrier-grade NAT
# (EIM, no hairpin rule). The homes' routers are on their own links to cgn.
up_cgnat() {  # home-a-kind home-b-kind router
    local router=$3 side home kind
    wan_link cgn wan-a 198.51.100.1/25 198.51.100.2/25
    for side in a b; do
        home=home-$side
        [[ $side == a ]] && kind=$1 || kind=$2
        local net=1; [[ $side == b ]] && net=2
        link cgn "sub-$side" "$home" wan
        addr cgn "sub-$side" "100.64.$net.1/24"
        addr "$home" wan "100.64.$net.2/24"
        ip -n "$(ns "$home")" route add default via "100.64.$net.1"
        link "$home" lan "peer-$side" eth0
        addr "$home" lan 192.168.1.1/24
        addr "peer-$side" eth0 "$(peer_ip cgnat "$side" "$kind")/24"
        ip -n "$(ns "peer-$side")" route add default via 192.168.1.1
        setup_router "$home" "$kind" "$router"
    done
    setup_router cgn eim-apdf "$router"
}

cmd_exec() {
    [[ $# -ge 2 ]] || die "exec NODE CMD..."
    local node=$1; shift
    valid_node "$node" || die "unknown node '$node' (${ALL_NODES[*]})"
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$(ns "$node")" \
        || die "node '$node' is not up (its topology's nodes: pair: $(topology_nodes pair); lan: $(topology_nodes lan); cgnat: $(topology_nodes cgnat))"
    exec ip netns exec "$(ns "$node")" "$@"
}

cmd_check() {
    local agent=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --agent) agent=$2; shift 2 ;;
            *) die "check: unknown option $1" ;;
        esac
    done
    local tool reason=""
    if [[ $(id -u) != 0 ]]; then
        reason="not root (network namespaces need root)"
    else
        for tool in ip iptables python3 ss; do
            command -v "$tool" >/dev/null 2>&1 || { reason="'$tool' is not installed"; break; }
        done
    fi
    if [[ -z $reason ]]; then
        local probe="${PREFIX}probe-$$"
        if ip netns add "$probe" 2>/dev/null; then
            ip netns exec "$probe" iptables -t nat -A POSTROUTING -o lo -j MASQUERADE --random-fully >/dev/null 2>&1 \
                || reason="iptables MASQUERADE --random-fully does not work in a namespace"
            ip netns del "$probe" 2>/dev/null || true
        else
            reason="'ip netns add' failed (no namespace support here)"
        fi
    fi
    if [[ -z $reason && -n $agent && ! -x $agent ]]; then
        reason="agent binary $agent is missing (build it first)"
    fi
    if [[ -n $reason ]]; then echo "$reason"; return 1; fi
    echo ok
}

# ---------------------------------------------------------------- traffic helpers

write_helper() {
    cat >"$1" <<'PY'
# Echo services and clients for the lab; every wait has a deadline.
import hashlib, math, os, socket, statistics, struct, sys, threading, time

def tcp_echo(port):
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port)); srv.listen(16)
    def serve(c):
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                c.sendall(d)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def udp_echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", port))
    while True:
        d, a = s.recvfrom(65536); s.sendto(d, a)

def tcp_client(port, size, limit, wait=0):
    # ok: echo matched by sha256. closed: the forward closed us. timeout: nothing within the limit.
    # A refused connect is retried every 10 ms for `wait` seconds (the client may start before the
    # listen agent). first=: seconds from connect until the first echoed byte (- when none came);
    # at=: the wall clock at connect, to relate it to the agents' start.
    start = time.monotonic(); at = time.time(); data = os.urandom(size); first = None
    def since():
        return f"{time.monotonic()-start:.2f} first={'-' if first is None else f'{first:.3f}'} at={at:.3f}"
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except ConnectionRefusedError as e:
            if time.monotonic() - start < wait:
                time.sleep(0.01); continue
            print(f"refused {since()} {e}"); return
        except OSError as e:
            print(f"refused {since()} {e}"); return
    start = time.monotonic(); at = time.time()
    c.settimeout(0.5)
    def send():
        try:
            c.sendall(data)
        except OSError:
            pass
    threading.Thread(target=send, daemon=True).start()
    h = hashlib.sha256(); got = 0
    while got < size:
        if time.monotonic() - start > limit:
            print(f"timeout {since()} received={got}"); return
        try:
            d = c.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            print(f"closed {since()} {type(e).__name__} received={got}"); return
        if not d:
            print(f"closed {since()} eof received={got}"); return
        if first is None:
            first = time.monotonic() - start
        h.update(d); got += len(d)
    ok = h.hexdigest() == hashlib.sha256(data).hexdigest()
    print(f"{'ok' if ok else 'mismatch'} {since()} bytes={got} sha256={h.hexdigest()[:16]}")
    c.close()

def udp_client(port, count, limit):
    # Each request is resent until its echo arrives: the path may drop datagrams.
    # first=: seconds until the first echo came back (- when none did); at=: the wall clock at start.
    start = time.monotonic(); at = time.time(); first = None
    def since():
        return f"{time.monotonic()-start:.2f} first={'-' if first is None else f'{first:.3f}'} at={at:.3f}"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(0.3)
    done = 0; sent = 0
    for i in range(count):
        msg = b"natlab-%d-" % i + os.urandom(8).hex().encode()
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now - start > limit:
                print(f"timeout {since()} answered={done}/{count} sent={sent}"); return
            if now >= next_send:
                try:
                    s.sendto(msg, ("127.0.0.1", port)); sent += 1
                except OSError:
                    pass
                next_send = now + 0.5
            try:
                d, _ = s.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                time.sleep(0.05); continue
            if d == msg:
                if first is None:
                    first = time.monotonic() - start
                done += 1; break
    print(f"ok {since()} answered={done}/{count} sent={sent}")

def percentile(values, p):  # nearest rank
    v = sorted(values); return v[max(0, math.ceil(p / 100 * len(v)) - 1)]

def tcp_latency(port, count, warm_limit, sample_limit):
    # Time from starting a new connection to the forward until one byte comes back, count times,
    # 0.2 s apart, once a first echo has shown the forward works.
    def one(limit):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=limit) as c:
            c.settimeout(max(0.1, limit - (time.perf_counter() - start)))
            c.sendall(b"L")
            if c.recv(1) != b"L":
                raise OSError("no echo (connection closed)")
        return (time.perf_counter() - start) * 1000
    start = time.monotonic(); warm = None
    while time.monotonic() - start < warm_limit:
        try:
            one(min(10, warm_limit)); warm = time.monotonic() - start; break
        except OSError:
            time.sleep(0.5)
    if warm is None:
        print(f"failed warm-up: no echo within {warm_limit}s"); return
    samples = []; failed = 0
    for i in range(count):
        if i:
            time.sleep(0.2)
        try:
            samples.append(one(sample_limit))
        except OSError:
            failed += 1
    if not samples:
        print(f"failed all {count} samples"); return
    print(f"latency median_ms={statistics.median(samples):.2f} p90_ms={percentile(samples, 90):.2f} n={len(samples)} "
          f"failed={failed} warm_s={warm:.2f} samples=" + ",".join(f"{x:.1f}" for x in samples))

def icmp_rtt(dst, count):
    # ping without needing ping installed: raw ICMP echo, median of count answers; the first,
    # unanswered or not, is a warm-up and not counted.
    def checksum(b):
        t = sum(struct.unpack(f"!{len(b) // 2}H", b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
        return ~t & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF; rtts = []
    for seq in range(count + 1):
        body = os.urandom(16)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + body), ident, seq) + body
        start = time.perf_counter(); s.sendto(pkt, (dst, 0))
        while (left := start + 2 - time.perf_counter()) > 0:
            s.settimeout(left)
            try:
                d, _ = s.recvfrom(4096)
            except socket.timeout:
                break
            kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", d, (d[0] & 15) * 4)
            if kind == 0 and rid == ident and rseq == seq:
                if seq:
                    rtts.append((time.perf_counter() - start) * 1000)
                break
        time.sleep(0.2)
    print(f"rtt median_ms={statistics.median(rtts):.2f} n={len(rtts)}" if rtts else f"rtt none n=0")

def arg(a):
    for kind in (int, float):
        try:
            return kind(a)
        except ValueError:
            pass
    return a

cmd = sys.argv[1]; args = [arg(a) for a in sys.argv[2:]]
{"tcp-echo": tcp_echo, "udp-echo": udp_echo, "tcp-client": tcp_client, "udp-client": udp_client,
 "tcp-latency": tcp_latency, "icmp-rtt": icmp_rtt}[cmd](*args)
PY
}

# CPU seconds (user+system) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo -1; }

port_open() {  # node proto port
    local flag=-Hltn; [[ $2 == udp ]] && flag=-Hlun
    [[ -n $(nx "$1" ss $flag "sport = :$3" 2>/dev/null) ]]
}

wait_until() {  # seconds cmd... ; bounded poll every 0.1 s
    local limit=$1 i; shift
    for ((i = 0; i < limit * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- one case

CASE_PIDS=()
EARLY_CLIENT=()
CLIENT_PID=""
CASE_DIR=""
case_cleanup() {
    local pid
    for pid in "${CASE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${CASE_PIDS[@]}"; do
        for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CASE_PIDS=()
    cmd_down
    [[ -n $CASE_DIR && -f $CASE_DIR/helper.py ]] && rm -f "$CASE_DIR/helper.py"
    return 0
}

# Brings the lab up for one run named NAME, its logs in CASE_DIR (LOG_ROOT/NAME, emptied first);
# whatever the run started and the lab itself go when the script exits.
run_lab_up() {  # name cmd_up-options...
    local name=$1 rc=0
    shift
    CASE_DIR="$LOG_ROOT/$name"
    rm -rf "$CASE_DIR"; mkdir -p "$CASE_DIR"
    trap case_cleanup EXIT
    trap 'exit 130' INT TERM
    # A subshell keeps errexit in force inside cmd_up (it is ignored in a function called under ||).
    set +e
    (set -e; cmd_up "$@") 2>"$CASE_DIR/up.log"
    rc=$?
    set -e
    [[ $rc == 0 ]] || { cat "$CASE_DIR/up.log" >&2; die "lab bring-up failed"; }
}

# The binary given with --agent, as an absolute path; dies when it is missing or not executable.
agent_path() {  # command path
    [[ -n $2 ]] || die "$1 needs --agent PATH (a built stunturn-agent)"
    [[ -x $2 ]] || die "agent binary $2 is missing or not executable"
    echo "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
}

# The last 10 lines of each of the run's logs named, on stderr.
show_log_tails() {  # log-name...
    local f
    for f in "$@"; do
        echo "--- $f.log (last 10 lines)" >&2
        tail -n 10 "$CASE_DIR/$f.log" >&2 2>/dev/null || true
    done
}

spawn() {  # node logfile cmd... ; sets SPAWNED
    local node=$1 logfile=$2; shift 2
    ip netns exec "$(ns "$node")" "$@" >"$logfile" 2>&1 </dev/null &
    SPAWNED=$!
    CASE_PIDS+=("$SPAWNED")
}

# Server (pub), echo service and expose agent (peer-b), listen agent (peer-a), each started once
# the one before is ready; logs and the helper in CASE_DIR. Sets SERVER_PID, EXPOSE_PID, LISTEN_PID,
# and LISTEN_STARTED (wall clock when the listen agent was started).
start_agents() {  # agent proto punch_timeout [relay-policy]
    local agent=$1 proto=$2 punch_timeout=$3 policy=${4:-auto} key udp_flag=() helper="$CASE_DIR/helper.py"
    key=$(python3 -c 'import uuid; print(uuid.uuid4())')
    [[ $proto == udp ]] && udp_flag=(--udp)
    local common=(--key "$key" --server "$SERVER_IP:$SERVER_PORT" "${udp_flag[@]}" --punch-timeout "$punch_timeout" --log-level debug)
    # auto is the agent's default; left out, agents from before the relay run too (latency baselines).
    [[ $policy == auto ]] || common+=(--relay "$policy")

    start_server "$agent"
    spawn peer-b "$CASE_DIR/service.log" python3 "$helper" "$proto-echo" "$SERVICE_PORT"
    wait_until 5 port_open peer-b "$proto" "$SERVICE_PORT" || die "echo service did not start"
    spawn peer-b "$CASE_DIR/expose.log" "$agent" forward --expose "127.0.0.1:$SERVICE_PORT" "${common[@]}"; EXPOSE_PID=$SPAWNED
    # The exposing side is ready once its long-poll is parked at the server.
    wait_until 10 server_has_client || log "expose agent is not polling the server after 10 s"
    # A client given in EARLY_CLIENT starts just before the listen agent and connects as soon as
    # the port opens, so it sees the session come up. Sets CLIENT_PID.
    if [[ ${#EARLY_CLIENT[@]} -gt 0 ]]; then spawn peer-a "$CASE_DIR/client.out" "${EARLY_CLIENT[@]}"; CLIENT_PID=$SPAWNED; fi
    LISTEN_STARTED=$(date +%s.%N)
    spawn peer-a "$CASE_DIR/listen.log" "$agent" forward --listen "127.0.0.1:$LISTEN_PORT" "${common[@]}"; LISTEN_PID=$SPAWNED
    wait_until 10 port_open peer-a "$proto" "$LISTEN_PORT" || log "listen agent did not open $proto $LISTEN_PORT within 10 s"
}

# The path of the first session an agent's log reports: "PATH PEER" (PEER as ip:port), or
# nothing. TCP forwards log "tunnel up: session with the peer established" with path= and
# peer=; UDP forwards log "udp tunnel up" (always punched, so direct).
session_path() {  # logfile
    local line path peer
    line=$(grep -m1 -e 'tunnel up: session with the peer established' -e 'udp tunnel up' "$1" 2>/dev/null) || return 0
    path=$(sed -n 's/.* path=\([a-z]*\) .*/\1/p' <<<"$line")
    [[ -z $path && $line == *"udp tunnel up"* ]] && path=direct
    peer=$(sed -n 's/.* peer=\([^ ]*\) .*/\1/p' <<<"$line")
    echo "${path:-unknown} ${peer:--}"
}

# Whether the listen side has said it has no session (not a relayed session's reason).
listen_failed() {
    grep -v 'session relayed through' "$CASE_DIR/listen.log" 2>/dev/null | grep -q -e 'punch failed' -e 'no session with the peer'
}

cmd_case() {
    local topology=pair nat_a="" nat_b="" proto="" router=answer loss=0 delay=0 agent="" punch_timeout=8
    local policy=auto relay_budget=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --topology) topology=$2; shift 2 ;;
            --nat-a) nat_a=$2; shift 2 ;;
            --nat-b) nat_b=$2; shift 2 ;;
            --proto) proto=$2; shift 2 ;;
            --router) router=$2; shift 2 ;;
            --loss) loss=$2; shift 2 ;;
            --delay) delay=$2; shift 2 ;;
            --agent) agent=$2; shift 2 ;;
            --punch-timeout) punch_timeout=$2; shift 2 ;;
            --relay) policy=$2; shift 2 ;;
            --relay-budget) relay_budget=$2; shift 2 ;;
            *) die "case: unknown option $1" ;;
        esac
    done
    valid_topology "$topology" || die "unknown topology '$topology' (pair, lan, cgnat)"
    [[ $topology == lan && -z $nat_b ]] && nat_b=$nat_a
    valid_kind "$nat_a" && valid_kind "$nat_b" || die "case needs --nat-a and --nat-b (none, eim-apdf, edm)"
    [[ $proto == tcp || $proto == udp ]] || die "case needs --proto tcp|udp"
    [[ $policy == auto || $policy == never || $policy == only ]] || die "--relay must be auto, never or only"
    # A relayed session must carry traffic within 3 s of the listen agent's start; under loss
    # every lost SYN (to the server, or of the relay's connection) costs TCP's 1 s time-out.
    if [[ -z $relay_budget ]]; then [[ $loss -gt 0 ]] && relay_budget=6 || relay_budget=3; fi
    [[ $relay_budget =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--relay-budget must be seconds"
    agent=$(agent_path case "$agent") || exit 2
    [[ $punch_timeout =~ ^[0-9]+$ && $punch_timeout -ge 1 ]] || die "--punch-timeout must be whole seconds"

    local name="${nat_a}_${nat_b}_${proto}_${router}_loss${loss}"
    [[ $topology == pair ]] || name="${topology}_$name"
    [[ $policy == auto ]] || name+="_relay-$policy"
    local expected case_start
    expected=$(expected_outcome "$topology" "$proto" "$nat_a" "$nat_b" "$policy" "$loss")
    case_start=$(date +%s.%N)
    run_lab_up "$name" --topology "$topology" --nat-a "$nat_a" --nat-b "$nat_b" --router "$router" --loss "$loss" --delay "$delay"
    grep -v '^natlab: up:' "$CASE_DIR/up.log" >&2 || true

    # Traffic. The client's limit is generous; a forward that neither works nor fails by then hangs.
    # The TCP client starts with the listen agent (see start_agents), the UDP one once its port is open.
    local helper="$CASE_DIR/helper.py" server_pid expose_pid listen_pid
    local limit=$((punch_timeout + 25)) client_out="$CASE_DIR/client.out" client_pid t0 failed_at="" now
    write_helper "$helper"
    EARLY_CLIENT=()
    [[ $proto == tcp ]] && EARLY_CLIENT=(python3 "$helper" tcp-client "$LISTEN_PORT" $((384 * 1024)) "$limit" 15)
    start_agents "$agent" "$proto" "$punch_timeout" "$policy"
    server_pid=$SERVER_PID; expose_pid=$EXPOSE_PID; listen_pid=$LISTEN_PID
    t0=$LISTEN_STARTED
    if [[ $proto == tcp ]]; then
        client_pid=$CLIENT_PID
    else
        spawn peer-a "$client_out" python3 "$helper" udp-client "$LISTEN_PORT" 5 "$limit"
        client_pid=$SPAWNED
    fi
    # While the client runs, note when the listen side first says it has no session.
    local i
    for ((i = 0; i < (limit + 25) * 10; i++)); do
        if [[ -z $failed_at ]] && listen_failed; then
            failed_at=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
        fi
        # A failed UDP forward has no connection to close: after the log line, give the client a
        # short grace (a retried punch may still work), then stop waiting.
        if [[ -n $failed_at && $proto == udp ]] && awk -v a="$(date +%s.%N)" -v b="$t0" -v f="$failed_at" 'BEGIN { exit !(a - b > f + 3) }'; then
            break
        fi
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
    local client_result
    client_result=$(head -n1 "$client_out" 2>/dev/null || true)
    [[ -n $client_result ]] || client_result="none"

    # Spin check: an idle agent should use next to no CPU over two seconds.
    local pid spin="" dead="" before after hz
    hz=$(getconf CLK_TCK)
    declare -A tick0=()
    for pid in "$server_pid" "$expose_pid" "$listen_pid"; do tick0[$pid]=$(cpu_ticks "$pid"); done
    sleep 2
    for pid in "$server_pid" "$expose_pid" "$listen_pid"; do
        local role=server
        [[ $pid == "$expose_pid" ]] && role=expose
        [[ $pid == "$listen_pid" ]] && role=listen
        if ! kill -0 "$pid" 2>/dev/null; then dead+="$role "; continue; fi
        after=$(cpu_ticks "$pid"); before=${tick0[$pid]}
        if [[ $before -ge 0 && $after -ge 0 ]] && (( (after - before) * 100 / hz > 100 )); then
            spin+="$role($(( (after - before) * 100 / hz / 2 ))%cpu) "
        fi
    done

    # The path each side reports for its first session, and what the direct one reached: the
    # peer's own address (host candidate), its public one (srflx), or this machine's own address.
    local listen_path expose_path path="-" peer_ip_seen="" candidate="" own_ip expose_host
    read -r path peer_ip_seen <<<"$(session_path "$CASE_DIR/listen.log")"
    read -r expose_path _ <<<"$(session_path "$CASE_DIR/expose.log")"
    path=${path:--}; peer_ip_seen=${peer_ip_seen%:*}
    own_ip=$(peer_ip "$topology" a "$nat_a")
    # Behind a NAT the peer's own address differs from its public one; with 'none' they are one.
    expose_host=$(peer_ip "$topology" b "$nat_b")
    [[ $topology == pair && $nat_b == none ]] && expose_host=""
    if [[ $path == direct ]]; then
        if [[ $peer_ip_seen == "$own_ip" ]]; then candidate=self
        elif [[ -n $expose_host && $peer_ip_seen == "$expose_host" ]]; then candidate=host
        else candidate=srflx; fi
    fi

    # first: from the client's connect to the first echoed byte; ready: from starting the listen
    # agent (which sets its session up at once) to that byte, i.e. until traffic works.
    local outcome detail seconds word t first at ready=-
    word=${client_result%% *}
    t=$(echo "$client_result" | awk '{print $2}')
    first=$(sed -n 's/.* first=\([^ ]*\).*/\1/p' <<<"$client_result")
    at=$(sed -n 's/.* at=\([^ ]*\).*/\1/p' <<<"$client_result")
    first=${first:--}
    if [[ $first != - && -n $at ]]; then
        ready=$(awk -v at="$at" -v s="$LISTEN_STARTED" -v f="$first" 'BEGIN { printf "%.3f", at - s + f }')
    fi
    # Without a session, the listen side must say so within the punch time-out; the slack covers
    # the signaling before it, which under packet loss can itself wait out TCP retransmissions (a
    # hello lost twice costs seconds).
    local slack=5
    [[ $loss -gt 0 ]] && slack=15
    if [[ -n $dead ]]; then
        outcome=BROKEN; detail="agent exited: ${dead% }"; seconds=${t:-0}
    elif [[ -n $spin ]]; then
        outcome=BROKEN; detail="agent spinning while idle: ${spin% }"; seconds=${t:-0}
    elif [[ $word == ok ]]; then
        seconds=$t; detail="client: $client_result; listen side: path=$path peer=${peer_ip_seen:--}; expose side: path=${expose_path:--}"
        if [[ $path != direct && $path != relay ]]; then
            outcome=BROKEN; detail="traffic flowed but listen.log names no session path; $detail"
        elif [[ $expose_path != "$path" ]]; then
            outcome=BROKEN; detail="the two sides report different paths; $detail"
        elif [[ $candidate == self ]]; then
            outcome=BROKEN; detail="the direct session is to this machine's own address $own_ip; $detail"
        elif [[ $path == direct ]]; then
            outcome=direct-$candidate
        elif awk -v f="$ready" -v m="$relay_budget" 'BEGIN { exit !(f != "-" && f <= m) }'; then
            outcome=relay
        else
            outcome=relay-slow; detail="first byte ${ready}s after the listen agent started, over the relay budget of ${relay_budget}s; $detail"
        fi
    elif [[ -n $failed_at ]] && awk -v f="$failed_at" -v m="$((punch_timeout + slack))" 'BEGIN { exit !(f <= m) }'; then
        if [[ $proto == tcp && $word != closed ]]; then
            outcome=BROKEN; detail="no session (logged at ${failed_at}s) but the client connection was not closed: $client_result"
        else
            outcome=fails-cleanly; detail="no session, logged at ${failed_at}s; client: $client_result"
        fi
        seconds=$failed_at
    elif [[ -n $failed_at ]]; then
        outcome=BROKEN; detail="no session, logged only at ${failed_at}s (timeout ${punch_timeout}s + ${slack}s for signaling); client: $client_result"; seconds=$failed_at
    else
        outcome=BROKEN; detail="no 'punch failed' line and no working forward; client: $client_result"; seconds=${t:-0}
    fi
    local total
    total=$(awk -v a="$(date +%s.%N)" -v b="$case_start" 'BEGIN { printf "%.1f", a - b }')
    echo "RESULT topology=$topology nat-a=$nat_a nat-b=$nat_b proto=$proto router=$router loss=$loss relay=$policy outcome=$outcome path=$path ready=$ready first_byte=$first seconds=$seconds expected=$expected"
    echo "DETAIL $detail (case ${total}s, logs in $CASE_DIR)"
    if ! outcome_expected "$outcome" "$expected"; then
        local f
        for f in listen expose server; do
            echo "--- $f.log (last 15 lines)" >&2
            tail -n 15 "$CASE_DIR/$f.log" >&2 2>/dev/null || true
        done
        return 1
    fi
    return 0
}

server_has_client() {
    [[ -n $(nx pub ss -Htn state established "sport = :$SERVER_PORT" 2>/dev/null) ]]
}

# ---------------------------------------------------------------- latency

# One measurement on a fresh pair lab (answering routers, TCP); prints its LATENCY line on
# stdout. Returns 1 when it could not measure.
latency_run() {  # name agent delay count nat-a nat-b
    local name=$1 agent=$2 delay=$3 count=$4 nat_a=$5 nat_b=$6
    CASE_DIR="$LOG_ROOT/latency-$name"
    rm -rf "$CASE_DIR"; mkdir -p "$CASE_DIR"
    log "latency: $name ($agent), $nat_a / $nat_b, delay ${delay}ms, $count connections"
    local rc=0
    set +e
    (set -e; cmd_up --nat-a "$nat_a" --nat-b "$nat_b" --router answer --delay "$delay") 2>"$CASE_DIR/up.log"
    rc=$?
    set -e
    [[ $rc == 0 ]] || { cat "$CASE_DIR/up.log" >&2; die "lab bring-up failed"; }
    grep -v '^natlab: up:' "$CASE_DIR/up.log" >&2 || true

    local helper="$CASE_DIR/helper.py" rtt_line rtt
    write_helper "$helper"
    # The round trip between the two NATs' public addresses, across inet: what every packet
    # between the peers goes through. Measured on the quiet lab, before any agent runs.
    rtt_line=$(nx nat-a timeout 20 python3 "$helper" icmp-rtt "$NAT_B_PUBLIC" 10 2>&1 || true)
    rtt=$(sed -n 's/^rtt median_ms=\([^ ]*\).*/\1/p' <<<"$rtt_line")
    [[ -n $rtt ]] || { log "latency: no ping answer from $NAT_B_PUBLIC: $rtt_line"; rtt=0; }

    start_agents "$agent" tcp 8
    # The client times inside peer-a; timeout bounds it as a whole (warm-up 60 s, 10 s a sample).
    local out="$CASE_DIR/latency.out" limit=$((60 + count * 11 + 10)) line
    spawn peer-a "$out" timeout "$limit" python3 "$helper" tcp-latency "$LISTEN_PORT" "$count" 60 10
    wait "$SPAWNED" 2>/dev/null || true
    line=$(head -n1 "$out" 2>/dev/null || true)
    case_cleanup
    local path
    read -r path _ <<<"$(session_path "$CASE_DIR/listen.log")"
    if [[ $line != latency* ]]; then
        echo "LATENCY agent=$name path=${path:--} failed rtt_ms=$rtt detail=${line:-none} (logs in $CASE_DIR)"
        return 1
    fi
    local median p90 n failed ratio
    median=$(sed -n 's/.* median_ms=\([^ ]*\).*/\1/p' <<<"$line")
    p90=$(sed -n 's/.* p90_ms=\([^ ]*\).*/\1/p' <<<"$line")
    n=$(sed -n 's/.* n=\([^ ]*\).*/\1/p' <<<"$line")
    failed=$(sed -n 's/.* failed=\([^ ]*\).*/\1/p' <<<"$line")
    ratio=$(awk -v m="$median" -v r="$rtt" 'BEGIN { if (r > 0) printf "%.2f", m / r; else print "n/a" }')
    log "latency: $name: $line"
    local extra=""
    [[ -n $failed && $failed != 0 ]] && extra=" failed=$failed"
    echo "LATENCY agent=$name path=${path:--} median_ms=$median p90_ms=$p90 rtt_ms=$rtt ratio=$ratio n=$n$extra"
}

cmd_latency() {
    local agent="" baseline="" delay=20 count=30 nat_a=eim-apdf nat_b=eim-apdf
    while [[ $# -gt 0 ]]; do
        case $1 in
            --agent) agent=$2; shift 2 ;;
            --baseline-agent) baseline=$2; shift 2 ;;
            --nat-a) nat_a=$2; shift 2 ;;
            --nat-b) nat_b=$2; shift 2 ;;
            --delay) delay=$2; shift 2 ;;
            --count) count=$2; shift 2 ;;
            *) die "latency: unknown option $1" ;;
        esac
    done
    agent=$(agent_path latency "$agent") || exit 2
    [[ -z $baseline ]] || baseline=$(agent_path latency "$baseline") || exit 2
    [[ $delay =~ ^[0-9]+$ ]] || die "--delay must be whole milliseconds"
    [[ $count =~ ^[0-9]+$ && $count -ge 1 ]] || die "--count must be a positive whole number"
    valid_kind "$nat_a" && valid_kind "$nat_b" || die "--nat-a and --nat-b: none, eim-apdf or edm"
    trap case_cleanup EXIT
    trap 'exit 130' INT TERM
    local bad=0
    latency_run current "$agent" "$delay" "$count" "$nat_a" "$nat_b" || bad=1
    if [[ -n $baseline ]]; then
        latency_run baseline "$baseline" "$delay" "$count" "$nat_a" "$nat_b" || bad=1
    fi
    return $bad
}

# ---------------------------------------------------------------- matrix

cmd_matrix() {
    local agent="" quick=0 punch_timeout=8 policy=auto topologies=pair,lan,cgnat
    while [[ $# -gt 0 ]]; do
        case $1 in
            --agent) agent=$2; shift 2 ;;
            --quick) quick=1; shift ;;
            --punch-timeout) punch_timeout=$2; shift 2 ;;
            --relay) policy=$2; shift 2 ;;
            --topologies) topologies=$2; shift 2 ;;
            *) die "matrix: unknown option $1" ;;
        esac
    done
    [[ -n $agent ]] || die "matrix needs --agent PATH"
    local t
    for t in ${topologies//,/ }; do valid_topology "$t" || die "unknown topology '$t' (pair, lan, cgnat)"; done
    trap cmd_down EXIT
    trap 'exit 130' INT TERM
    local kinds=(none eim-apdf edm) routers=(drop answer) losses=(0 5) protos=(tcp udp)
    [[ $quick == 1 ]] && { routers=(answer); losses=(0); }
    local results="$LOG_ROOT/matrix-results.txt" total=0 bad=0
    mkdir -p "$LOG_ROOT"; : >"$results"
    declare -A cell=()

    # One case: its table cell (outcome and seconds from starting the listen agent: to the first
    # echoed byte when it works, to the "punch failed" line when it fails cleanly), ⚠ when not
    # the expected outcome.
    run_one() {  # key topology a b router proto loss
        local key=$1 topology=$2 a=$3 b=$4 r=$5 p=$6 l=$7 line outcome ready secs expected mark=""
        total=$((total + 1))
        log "case $total: topology=$topology nat-a=$a nat-b=$b router=$r proto=$p loss=$l relay=$policy"
        line=$(timeout 150 bash "$0" case --topology "$topology" --nat-a "$a" --nat-b "$b" --router "$r" --proto "$p" \
            --loss "$l" --relay "$policy" --punch-timeout "$punch_timeout" --agent "$agent" 2>/dev/null | grep '^RESULT' || true)
        expected=$(expected_outcome "$topology" "$p" "$a" "$b" "$policy" "$l")
        outcome=$(sed -n 's/.* outcome=\([^ ]*\).*/\1/p' <<<"$line")
        ready=$(sed -n 's/.* ready=\([^ ]*\).*/\1/p' <<<"$line")
        secs=$(sed -n 's/.* seconds=\([^ ]*\).*/\1/p' <<<"$line")
        [[ -n $outcome ]] || { outcome=BROKEN; secs="?"; line="RESULT topology=$topology nat-a=$a nat-b=$b proto=$p router=$r loss=$l relay=$policy outcome=BROKEN (no RESULT line: case timed out or crashed) expected=$expected"; }
        echo "$line" >>"$results"
        log "  -> $line"
        outcome_expected "$outcome" "$expected" || { mark=" ⚠"; bad=$((bad + 1)); }
        [[ -n $ready && $ready != - ]] && secs=$ready
        cell[$key]="$outcome ${secs}s$mark"
    }

    local a b r l p
    if [[ ",$topologies," == *,pair,* ]]; then
        for a in "${kinds[@]}"; do for b in "${kinds[@]}"; do for r in "${routers[@]}"; do
            for p in "${protos[@]}"; do for l in "${losses[@]}"; do
                run_one "pair,$a,$b,$r,$p,$l" pair "$a" "$b" "$r" "$p" "$l"
            done; done
        done; done; done
    fi
    # The shared LAN with either NAT kind; two homes (eim-apdf) behind the carrier NAT. No loss:
    # the host path does not cross the internet, and the relay's runs under loss are in pair.
    local extra=()
    [[ ",$topologies," == *,lan,* ]] && extra+=("lan eim-apdf eim-apdf" "lan edm edm")
    [[ ",$topologies," == *,cgnat,* ]] && extra+=("cgnat eim-apdf eim-apdf")
    local e
    for e in "${extra[@]}"; do
        read -r t a b <<<"$e"
        for r in "${routers[@]}"; do for p in "${protos[@]}"; do
            run_one "$t,$a,$b,$r,$p,0" "$t" "$a" "$b" "$r" "$p" 0
        done; done
    done

    local c row exp why cols=() header sep
    if [[ ",$topologies," == *,pair,* ]]; then
        header="| nat-a (listen) | nat-b (expose) | router | expected tcp / udp |"; sep="|---|---|---|---|"
        for p in "${protos[@]}"; do for l in "${losses[@]}"; do
            cols+=("$p,$l"); header+=" $p${l:+ loss $l%} |"; sep+="---|"
        done; done
        header=${header// loss 0%/}
        echo "$header"; echo "$sep"
        for a in "${kinds[@]}"; do for b in "${kinds[@]}"; do for r in "${routers[@]}"; do
            exp="$(expected_outcome pair tcp "$a" "$b" "$policy") / $(expected_outcome pair udp "$a" "$b" "$policy")"
            row="| $a | $b | $r | $exp |"
            for c in "${cols[@]}"; do row+=" ${cell[pair,$a,$b,$r,${c%,*},${c#*,}]} |"; done
            echo "$row"
        done; done; done
        echo
    fi
    if [[ ${#extra[@]} -gt 0 ]]; then
        echo "| topology | nat-a / nat-b | router | expected tcp / udp | tcp | udp |"
        echo "|---|---|---|---|---|---|"
        for e in "${extra[@]}"; do
            read -r t a b <<<"$e"
            for r in "${routers[@]}"; do
                exp="$(expected_outcome "$t" tcp "$a" "$b" "$policy") / $(expected_outcome "$t" udp "$a" "$b" "$policy")"
                local nats="$a / $b"
                [[ $t == lan ]] && nats="$a (one NAT)"
                [[ $t == cgnat ]] && nats="$a / $b, cgn eim-apdf"
                echo "| $t | $nats | $r | $exp | ${cell[$t,$a,$b,$r,tcp,0]} | ${cell[$t,$a,$b,$r,udp,0]} |"
            done
        done
        echo
    fi
    echo "Seconds: from starting the listen agent (which sets its session up at once; the client connects as soon as its port is open) until the first echoed byte came back (direct-srflx, direct-host, relay), or until the listen side logged \"punch failed\" (fails-cleanly)."
    if [[ ,$topologies, == *,pair,* && ${#losses[@]} -gt 1 && $policy == auto ]]; then
        echo "With loss, a pairing with a direct path may also be relayed: a lost SYN is resent after 1 s, past relay_after (the expected outcome is direct or relay there)."
    fi
    echo "⚠ marks an outcome other than the expected one. Pairings without a direct path:"
    local seen=""
    for e in "pair none none" "pair none eim-apdf" "pair none edm" "pair eim-apdf none" "pair eim-apdf eim-apdf" "pair eim-apdf edm" \
        "pair edm none" "pair edm eim-apdf" "pair edm edm" "${extra[@]}"; do
        read -r t a b <<<"$e"
        [[ ",$topologies," == *,$t,* ]] || continue
        for p in "${protos[@]}"; do
            why=$(expected_reason "$t" "$p" "$a" "$b")
            [[ -n $why && $seen != *"|$t $a $b $p|"* ]] || continue
            seen+="|$t $a $b $p|"
            echo "- $t $a / $b, $p: $why"
        done
    done
    echo
    echo "$((total - bad)) of $total cases as expected."
    [[ $bad == 0 ]]
}

# ---------------------------------------------------------------- idle time-outs and rebinding

# Sets a NAT router's conntrack time-outs (seconds): UDP (one-way and "stream", i.e. answered,
# flows alike) and established TCP. The sysctls are per network namespace.
set_conntrack_timeouts() {  # node udp tcp-established
    nx "$1" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$2" \
        net.netfilter.nf_conntrack_udp_timeout_stream="$2" \
        net.netfilter.nf_conntrack_tcp_timeout_established="$3"
}

conntrack_timeouts() {  # node; "udp=S/S tcp_established=S" as read back
    local u us t
    u=$(nx "$1" sysctl -n net.netfilter.nf_conntrack_udp_timeout)
    us=$(nx "$1" sysctl -n net.netfilter.nf_conntrack_udp_timeout_stream)
    t=$(nx "$1" sysctl -n net.netfilter.nf_conntrack_tcp_timeout_established)
    echo "udp=$u/$us tcp_established=$t"
}

# The NAT routers of a pair lab that translate (a 'none' side only routes).
pair_routers() {  # nat-a nat-b
    local r=()
    [[ $1 == none ]] || r+=(nat-a)
    [[ $2 == none ]] || r+=(nat-b)
    echo "${r[*]}"
}

# One forward: an echo service on peer-b's SERVICE_PORT, its expose agent, and a listen agent on
# peer-a's LISTEN_PORT; the agents' admin sockets in CASE_DIR (status works from the host: the
# sockets are files). Waits until both ends are ready. proto name agent service-port listen-port
# [extra agent options...]
start_forward() {
    local proto=$1 name=$2 agent=$3 sport=$4 lport=$5 key udp_flag=()
    shift 5
    key=$(python3 -c 'import uuid; print(uuid.uuid4())')
    [[ $proto == udp ]] && udp_flag=(--udp)
    local common=(--key "$key" --server "$SERVER_IP:$SERVER_PORT" "${udp_flag[@]}" --log-level debug "$@")
    spawn peer-b "$CASE_DIR/$name-service.log" python3 "$CASE_DIR/helper.py" "$proto-echo" "$sport"
    wait_until 5 port_open peer-b "$proto" "$sport" || die "$name: echo service did not start"
    spawn peer-b "$CASE_DIR/$name-expose.log" "$agent" forward --expose "127.0.0.1:$sport" "${common[@]}" \
        --admin "$CASE_DIR/$name-expose.sock"
    local before
    before=$(nx pub ss -Htn state established "sport = :$SERVER_PORT" 2>/dev/null | wc -l)
    wait_until 10 server_clients_above "$before" || log "$name: expose agent is not polling the server after 10 s"
    spawn peer-a "$CASE_DIR/$name-listen.log" "$agent" forward --listen "127.0.0.1:$lport" "${common[@]}" \
        --admin "$CASE_DIR/$name-listen.sock"
    wait_until 10 port_open peer-a "$proto" "$lport" || log "$name: listen agent did not open $proto $lport within 10 s"
}

server_clients_above() {
    [[ $(nx pub ss -Htn state established "sport = :$SERVER_PORT" 2>/dev/null | wc -l) -gt $1 ]]
}

start_server() {  # agent
    spawn pub "$CASE_DIR/server.log" "$1" server --listen "$SERVER_IP:$SERVER_PORT"; SERVER_PID=$SPAWNED
    wait_until 10 port_open pub tcp "$SERVER_PORT" || log "server did not open TCP $SERVER_PORT within 10 s"
}

# "path=P sessions=N" of the one forward an agent runs, from its admin socket.
agent_link() {  # agent admin-socket
    "$1" status --admin "$2" --json 2>/dev/null | python3 -c '
import json, sys
try:
    f = json.load(sys.stdin)["forwards"][0]
    print("path=%s sessions=%s" % (f["path"], f["sessions_established"]))
except Exception:
    print("path=? sessions=?")'
}

# Brings a pair lab up for idle/rebind, as a case does, with the helper written; sets CASE_DIR.
fault_lab_up() {  # name nat-a nat-b router
    run_lab_up "$1" --nat-a "$2" --nat-b "$3" --router "$4"
    write_helper "$CASE_DIR/helper.py"
}

cmd_idle() {
    local agent="" nat_a=eim-apdf nat_b=eim-apdf router=answer idle=90 udp_timeout=30 tcp_timeout=60 limit=2 extra=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --agent) agent=$2; shift 2 ;;
            --nat-a) nat_a=$2; shift 2 ;;
            --nat-b) nat_b=$2; shift 2 ;;
            --router) router=$2; shift 2 ;;
            --idle) idle=$2; shift 2 ;;
            --udp-timeout) udp_timeout=$2; shift 2 ;;
            --tcp-timeout) tcp_timeout=$2; shift 2 ;;
            --limit) limit=$2; shift 2 ;;
            --keepalive) extra=(--keepalive "$2"); shift 2 ;;
            *) die "idle: unknown option $1" ;;
        esac
    done
    agent=$(agent_path idle "$agent") || exit 2
    valid_kind "$nat_a" && valid_kind "$nat_b" || die "--nat-a and --nat-b: none, eim-apdf or edm"
    local n
    for n in "$idle" "$udp_timeout" "$tcp_timeout"; do [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "--idle, --udp-timeout and --tcp-timeout take whole seconds"; done
    [[ $limit =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--limit must be seconds"
    fault_lab_up idle "$nat_a" "$nat_b" "$router"
    local r timeouts=""
    for r in $(pair_routers "$nat_a" "$nat_b"); do
        set_conntrack_timeouts "$r" "$udp_timeout" "$tcp_timeout"
        timeouts+=" $r:$(conntrack_timeouts "$r" | tr ' ' ',')"
    done
    log "idle: conntrack time-outs${timeouts:- (no NAT router)}; idle ${idle}s"

    start_server "$agent"
    start_forward tcp tcp "$agent" "$SERVICE_PORT" "$LISTEN_PORT" "${extra[@]}"
    start_forward udp udp "$agent" $((SERVICE_PORT + 2)) $((LISTEN_PORT + 2)) "${extra[@]}"
    # Both clients warm up (30 s at most), stay silent for the idle time, then ask again.
    local flows="$SCRIPT_DIR/natlab/flows.py" tcp_pid udp_pid bound=$((idle + 75))
    spawn peer-a "$CASE_DIR/tcp-client.out" timeout "$bound" python3 "$flows" tcp-idle "$LISTEN_PORT" "$idle" "$limit" 30; tcp_pid=$SPAWNED
    spawn peer-a "$CASE_DIR/udp-client.out" timeout "$bound" python3 "$flows" udp-idle $((LISTEN_PORT + 2)) "$idle" "$limit" 30; udp_pid=$SPAWNED
    wait "$tcp_pid" 2>/dev/null || true
    wait "$udp_pid" 2>/dev/null || true
    # The TCP forward's session count, and how many UDP flows the listen side set up (one: the
    # client's flow lasted through the pause).
    local tcp_line udp_line tcp_link udp_flows
    tcp_line=$(head -n1 "$CASE_DIR/tcp-client.out" 2>/dev/null || true)
    udp_line=$(head -n1 "$CASE_DIR/udp-client.out" 2>/dev/null || true)
    tcp_link=$(agent_link "$agent" "$CASE_DIR/tcp-listen.sock")
    udp_flows=$(grep -c 'udp tunnel up' "$CASE_DIR/udp-listen.log" 2>/dev/null || true)
    local tcp_word=${tcp_line%% *} udp_word=${udp_line%% *} tcp_s udp_s
    tcp_s=$(sed -n 's/.* echo_s=\([^ ]*\).*/\1/p' <<<"$tcp_line")
    udp_s=$(sed -n 's/.* echo_s=\([^ ]*\).*/\1/p' <<<"$udp_line")
    echo "IDLE idle=${idle}s limit=${limit}s conntrack_udp=${udp_timeout}s conntrack_tcp_established=${tcp_timeout}s" \
        "udp=${udp_word:-none} udp_echo_s=${udp_s:--} tcp=${tcp_word:-none} tcp_echo_s=${tcp_s:--}" \
        "tcp_listen=[$tcp_link] udp_flows=${udp_flows:-0}"
    echo "DETAIL udp client: ${udp_line:-none}; tcp client: ${tcp_line:-none}; routers:${timeouts:- none} (logs in $CASE_DIR)"
    if [[ $tcp_word != ok || $udp_word != ok ]]; then
        show_log_tails tcp-listen tcp-expose udp-listen udp-expose
        return 1
    fi
}

cmd_rebind() {
    local agent="" nat_a=eim-apdf nat_b=eim-apdf router=answer hold=40 limit=20 extra=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --agent) agent=$2; shift 2 ;;
            --nat-a) nat_a=$2; shift 2 ;;
            --nat-b) nat_b=$2; shift 2 ;;
            --router) router=$2; shift 2 ;;
            --hold) hold=$2; shift 2 ;;
            --limit) limit=$2; shift 2 ;;
            --keepalive) extra=(--keepalive "$2"); shift 2 ;;
            *) die "rebind: unknown option $1" ;;
        esac
    done
    agent=$(agent_path rebind "$agent") || exit 2
    valid_kind "$nat_a" && valid_kind "$nat_b" || die "--nat-a and --nat-b: none, eim-apdf or edm"
    [[ $hold =~ ^[0-9]+$ && $hold -ge 10 ]] || die "--hold must be whole seconds, at least 10"
    [[ $limit =~ ^[0-9]+$ && $limit -ge 1 ]] || die "--limit must be whole seconds"
    command -v conntrack >/dev/null 2>&1 || die "rebind needs the conntrack tool (Debian: conntrack)"
    fault_lab_up rebind "$nat_a" "$nat_b" "$router"
    start_server "$agent"
    start_forward tcp tcp "$agent" "$SERVICE_PORT" "$LISTEN_PORT" "${extra[@]}"
    local flows="$SCRIPT_DIR/natlab/flows.py" line
    line=$(nx peer-a timeout 40 python3 "$flows" tcp-recover "$LISTEN_PORT" "$(date +%s.%N)" 30 || true)
    [[ $line == ok* ]] || die "rebind: the forward never worked: $line (logs in $CASE_DIR)"
    local before after
    before=$(agent_link "$agent" "$CASE_DIR/tcp-listen.sock")

    # An open connection carries data (64 KiB/s) through the flush and well past it.
    local hold_pid marker="$CASE_DIR/hold.flowing"
    spawn peer-a "$CASE_DIR/hold.out" timeout $((hold + 45)) python3 "$flows" tcp-hold "$LISTEN_PORT" "$hold" 65536 "$marker"
    hold_pid=$SPAWNED
    wait_until 10 test -s "$marker" || log "rebind: the held connection carried nothing within 10 s"
    sleep 3
    local flushed r routers
    routers=$(pair_routers "$nat_a" "$nat_b")
    flushed=$(date +%s.%N)
    for r in $routers; do nx "$r" conntrack -F >/dev/null 2>&1 || log "conntrack -F failed on $r"; done
    log "rebind: flushed conntrack on ${routers:-no router}"
    local recover
    recover=$(nx peer-a timeout $((limit + 50)) python3 "$flows" tcp-recover "$LISTEN_PORT" "$flushed" $((limit + 40)) || true)
    wait "$hold_pid" 2>/dev/null || true
    after=$(agent_link "$agent" "$CASE_DIR/tcp-listen.sock")
    local held word secs ended
    held=$(head -n1 "$CASE_DIR/hold.out" 2>/dev/null || true)
    word=${held%% *}
    secs=$(sed -n 's/.* recovered_s=\([^ ]*\).*/\1/p' <<<"$recover")
    # How the session that carried the connection ended, as the listen side logged it.
    ended=$(grep -m1 'session with the peer ended' "$CASE_DIR/tcp-listen.log" 2>/dev/null | sed 's/.*session with the peer ended: //' | cut -c1-160 || true)
    local open=${word:-none}
    [[ $open == ok ]] && open=survived
    echo "REBIND routers=${routers// /,} open_connection=$open new_connections_s=${secs:--} limit=${limit}s before=[$before] after=[$after]"
    echo "DETAIL held: ${held:-none}; new connections: ${recover:-none}; first session end: ${ended:-none} (logs in $CASE_DIR)"
    local bad=0
    [[ $open == survived || $open == reset ]] || bad=1
    awk -v s="${secs:--}" -v l="$limit" 'BEGIN { exit !(s != "-" && s <= l) }' || bad=1
    if [[ $bad == 1 ]]; then
        show_log_tails tcp-listen tcp-expose server
        return 1
    fi
}

# ---------------------------------------------------------------- main

[[ $# -ge 1 ]] || { usage; exit 2; }
command=$1; shift
case $command in
    up)
        # A half-built lab is removed; a finished one stays up for the developer.
        trap 'rc=$?; [[ $rc == 0 ]] || cmd_down; exit $rc' EXIT
        trap 'exit 130' INT TERM
        cmd_up "$@" ;;
    down) cmd_down ;;
    exec) cmd_exec "$@" ;;
    check) cmd_check "$@" ;;
    case) cmd_case "$@" ;;
    matrix) cmd_matrix "$@" ;;
    latency) cmd_latency "$@" ;;
    idle) cmd_idle "$@" ;;
    rebind) cmd_rebind "$@" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
esac
