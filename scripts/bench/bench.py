#!/usr/bin/env python3
"""stunturn benchmarks on loopback; run through scripts/bench.sh.

Every comparison runs its reference in the same run, interleaved round by round, and reports
medians and ratios: absolute numbers on shared machines drift from run to run.
"""
import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
MIB = 1024 * 1024


# ---------------------------------------------------------------- processes

class Procs:
    """Every child runs in its own session so cleanup can end it with its children, by id."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, log=None, **kw):
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=5):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            self.stop(p)


PROCS = Procs()


def free_port():
    # TCP and UDP both free: the signaling server binds both on one port.
    for _ in range(50):
        with socket.socket() as t:
            t.bind((HOST, 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def echo_once(port, timeout=15.0):
    """Connect, send one byte, wait for it to come back; seconds taken."""
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise RuntimeError("echo failed")
        took = time.perf_counter() - t0
    return took


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- fixtures

class Env:
    def __init__(self, agent, tmp, bench=None, go_server=None):
        self.agent = agent
        self.tmp = tmp
        self.bench = bench
        self.go_server = go_server

    def logfile(self, name):
        return os.path.join(self.tmp, name + ".log")

    def server(self, *extra):
        port = free_port()
        PROCS.start([self.agent, "server", "--listen", f"{HOST}:{port}", "--log-level", "warning", *extra],
                    log=self.logfile(f"server-{port}"))
        wait_port(port)
        return port

    def agent_pair(self, server, target, plaintext=False, extra=()):
        """An exposing agent for `target` and a listening one; returns the listen port."""
        key = subprocess.check_output([self.agent, "keygen"], text=True).strip()
        lport = free_port()
        extra = (["--plaintext-insecure"] if plaintext else []) + list(extra)
        common = ["--key", key, "--server", f"{HOST}:{server}", "--log-level", "warning", *extra]
        e = PROCS.start([self.agent, "forward", "--expose", f"{HOST}:{target}", *common], log=self.logfile(f"expose-{lport}"))
        l = PROCS.start([self.agent, "forward", "--listen", f"{HOST}:{lport}", *common], log=self.logfile(f"listen-{lport}"))
        wait_port(lport)
        return lport, e, l

    def socat_chain(self, target):
        mid, front = free_port(), free_port()
        PROCS.start(["socat", "-b", "262144", f"TCP-LISTEN:{mid},bind={HOST},fork,reuseaddr", f"TCP:{HOST}:{target}"])
        PROCS.start(["socat", "-b", "262144", f"TCP-LISTEN:{front},bind={HOST},fork,reuseaddr", f"TCP:{HOST}:{mid}"])
        wait_port(mid)
        wait_port(front)
        return front

    def ssh_tunnel(self, target):
        d = os.path.join(self.tmp, "ssh")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o700)
        hostkey, userkey = os.path.join(d, "host_ed25519"), os.path.join(d, "user_ed25519")
        for k in (hostkey, userkey):
            subprocess.check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k])
        shutil.copy(userkey + ".pub", os.path.join(d, "authorized_keys"))
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        sport, lport = free_port(), free_port()
        conf = os.path.join(d, "sshd_config")
        with open(conf, "w") as f:
            f.write(f"""Port {sport}
ListenAddress {HOST}
HostKey {hostkey}
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
Ciphers aes128-gcm@openssh.com
""")
        PROCS.start([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", conf], log=self.logfile("sshd"))
        wait_port(sport)
        user = os.environ.get("USER") or "root"
        PROCS.start(["ssh", "-N", "-p", str(sport), "-i", userkey,
                     "-o", "Ciphers=aes128-gcm@openssh.com", "-o", "Compression=no",
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
                     "-L", f"{HOST}:{lport}:{HOST}:{target}", f"{user}@{HOST}"], log=self.logfile("ssh"))
        wait_port(lport, timeout=15)
        return lport

    def echo_server(self):
        port = free_port()
        PROCS.start([sys.executable, os.path.abspath(__file__), "echo-server", str(port)], log=self.logfile("echo"))
        wait_port(port)
        return port


# ---------------------------------------------------------------- throughput

def iperf_run(port, seconds):
    """One iperf3 client run through `port`: its JSON report and the CPU seconds it used.

    iperf3's server takes one test at a time and counts any connection as one: the probe that
    waited for a forward's port (a connection carried to the server and closed at once) can
    still hold it when the first test connects, which it then refuses before anything is
    measured. Such a refusal is tried again, twice, after a pause; any other failure is raised."""
    for attempt in range(3):
        before = os.times()
        out = subprocess.run(["iperf3", "-c", HOST, "-p", str(port), "-t", str(seconds), "-O", "1", "-J"],
                             capture_output=True, text=True, timeout=seconds + 30)
        after = os.times()
        client_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        data = json.loads(out.stdout)
        error = data.get("error")
        if error and attempt < 2 and "unable to receive control message" in error and not data.get("intervals"):
            log(f"  iperf3 through port {port} refused before the test began ({error}); trying again")
            time.sleep(1)
            continue
        if error:
            raise RuntimeError(error)
        return data, client_cpu


def iperf(port, seconds):
    """Rate in Gbit/s, bytes carried, and the CPU seconds the iperf3 client used."""
    data, client_cpu = iperf_run(port, seconds)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9, data["end"]["sum_received"]["bytes"], client_cpu


def record_layer(bench, quick):
    """The cipher alone: CPU seconds per GB to seal and to open tunnel records in memory."""
    out = subprocess.run([bench, "records", "--megabytes", "512" if quick else "2048", "--rounds", "3" if quick else "5"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"stunturn-bench records exited {out.returncode}")
    return json.loads(out.stdout)


def tree_cpu(pid):
    """CPU seconds of a process, its reaped children and its live descendants."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        children = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children.update(int(c) for c in f.read().split())
    except (OSError, ValueError):
        return 0.0
    return total + sum(tree_cpu(c) for c in children)


def bench_throughput(env, rounds, seconds, quick=False):
    # First, on a quiet machine: what the cipher alone costs per byte.
    cipher = record_layer(env.bench, quick)
    iport = free_port()
    iperf_server = PROCS.start(["iperf3", "-s", "-B", HOST, "-p", str(iport)], log=env.logfile("iperf3"))
    wait_port(iport)
    server = env.server()
    # The relay processes of each path, whose CPU time per GB carried is reported beside the rate.
    relays = {"direct": []}
    n = len(PROCS.procs)
    front = env.socat_chain(iport)
    relays["socat x2"] = [p.pid for p in PROCS.procs[n:]]
    n = len(PROCS.procs)
    ssh = env.ssh_tunnel(iport)
    relays["ssh -L aes128-gcm"] = [p.pid for p in PROCS.procs[n:]]
    enc, e1, l1 = env.agent_pair(server, iport)
    pt, e2, l2 = env.agent_pair(server, iport, plaintext=True)
    relays["stunturn"] = [e1.pid, l1.pid]
    relays["stunturn plaintext"] = [e2.pid, l2.pid]
    targets = {"direct": iport, "socat x2": front, "ssh -L aes128-gcm": ssh, "stunturn": enc, "stunturn plaintext": pt}
    runs = {name: [] for name in targets}
    cpu_per_gb = {name: [] for name in targets}
    # iperf3's own two ends: the rest of what the two cores spend per byte.
    ends_per_gb = {name: [] for name in targets}
    for r in range(rounds):
        # Rotate the order each round so no configuration always runs first.
        names = list(targets)
        names = names[r % len(names):] + names[:r % len(names)]
        for name in names:
            for attempt in range(3):
                try:
                    c0 = sum(tree_cpu(p) for p in relays[name])
                    s0 = tree_cpu(iperf_server.pid)
                    rate, carried, client_cpu = iperf(targets[name], seconds)
                    time.sleep(0.3)  # let forked relays (socat) exit and be reaped into their parent's total
                    runs[name].append(rate)
                    cpu_per_gb[name].append((sum(tree_cpu(p) for p in relays[name]) - c0) / (carried / 1e9))
                    ends_per_gb[name].append((tree_cpu(iperf_server.pid) - s0 + client_cpu) / (carried / 1e9))
                    break
                except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                    log(f"  iperf3 via {name} failed ({e}); retrying")
                    time.sleep(1)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {runs[n][-1]:.2f}" for n in targets if runs[n]))
    med = {n: median(v) for n, v in runs.items()}
    relay_cpu = {n: median(v) for n, v in cpu_per_gb.items() if n != "direct"}
    ends_cpu = {n: median(v) for n, v in ends_per_gb.items()}
    # If an encrypted relay pair cost exactly what the socat chain costs plus one seal and one open
    # per byte (an engine with no overhead of its own), and the cores stayed as busy, its rate
    # relative to socat would be the ratio of the two paths' CPU time per byte.
    socat_total = relay_cpu["socat x2"] + ends_cpu["socat x2"]
    floor = cipher["seal_and_open_cpu_s_per_gb"]
    return {
        "unit": "Gbit/s", "seconds": seconds, "rounds": rounds, "runs": runs, "median": med,
        # CPU seconds the relay processes (not iperf3) spent per GB carried, median over rounds:
        # on two shared cores, what a relay costs per byte is what decides its throughput.
        "relay_cpu_s_per_gb": relay_cpu,
        "iperf3_cpu_s_per_gb": ends_cpu,
        "record_layer": cipher,
        "encrypted_ceiling": {
            "relay_cpu_s_per_gb": relay_cpu["socat x2"] + floor,
            "ratio_to_socat": socat_total / (socat_total + floor),
        },
        "ratios": {
            "stunturn / socat x2": med["stunturn"] / med["socat x2"],
            "stunturn / ssh -L": med["stunturn"] / med["ssh -L aes128-gcm"],
            "plaintext / socat x2": med["stunturn plaintext"] / med["socat x2"],
            "stunturn / direct": med["stunturn"] / med["direct"],
        },
        "targets": {"stunturn / socat x2": 1.0, "stunturn / ssh -L": 1.0, "plaintext / socat x2 (stretch)": 1.3},
    }


# ---------------------------------------------------------------- setup latency

def bench_latency(env, count):
    echo = env.echo_server()
    server = env.server()
    targets = {"direct": echo, "stunturn": env.agent_pair(server, echo)[0],
               "stunturn plaintext": env.agent_pair(server, echo, plaintext=True)[0]}
    for port in targets.values():
        echo_once(port)  # warm-up: first connection pays for lazy initialisation
    samples = {n: [] for n in targets}
    failures = {n: 0 for n in targets}
    deadline = time.monotonic() + max(60, count * 3)
    for i in range(count):
        if time.monotonic() > deadline:
            log("  latency: time budget spent, stopping early")
            break
        for name, port in targets.items():
            try:
                samples[name].append(echo_once(port, timeout=5) * 1000)
            except (OSError, RuntimeError):
                failures[name] += 1
        time.sleep(0.02)  # fresh connections one after another, not a burst
    summary = {n: {"median": median(v), "p90": pct(v, 90), "min": min(v, default=float("nan")),
                   "max": max(v, default=float("nan")), "n": len(v), "failures": failures[n]}
               for n, v in samples.items()}
    return {"unit": "ms", "samples": samples, "summary": summary,
            "targets": {"median": 50.0, "median (stretch)": 10.0}}


# ---------------------------------------------------------------- signaling server

def run_load(bench, port, pid, mode, count, window=256):
    out = subprocess.run([bench, "signaling", "--server", f"{HOST}:{port}", "--mode", mode, "--count", str(count),
                          "--window", str(window), "--server-pid", str(pid), "--timeout", "120"],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"stunturn-bench {mode}: {out.stderr.strip() or out.stdout.strip()}")
    return json.loads(out.stdout)


def bench_signaling(env, count, pairs, rounds):
    """Both servers under the same load generator (stunturn-bench, epoll, one thread), interleaved.

    The Go original is measured when --go-server names its binary (built from
    github.com/tunnels-is/stunturn, server_test/test.go: `goserver HOST:PORT`)."""
    servers = {"stunturn": None}
    if env.go_server:
        servers["go original"] = env.go_server
    runs = {name: {"waiting": [], "together": [], "rss_waiting_kib": [], "waiting_cpu": [], "together_cpu": [],
                   "together_retries": []} for name in servers}
    for r in range(rounds):
        for name, binary in servers.items():
            # A fresh server per round: the Go original never frees a timed-out initiator's key,
            # and every round starts from the same empty state.
            if binary is None:
                port = env.server("--initiator-timeout", "300")
            else:
                port = free_port()
                PROCS.start([binary, f"{HOST}:{port}"], log=os.devnull)
                wait_port(port)
            pid = PROCS.procs[-1].pid
            time.sleep(0.3)
            w = run_load(env.bench, port, pid, "waiting", count)
            t = run_load(env.bench, port, pid, "together", pairs)
            PROCS.stop(PROCS.procs[-1])
            if w["paired"] != count or t["paired"] != pairs:
                raise RuntimeError(f"{name}: {w['paired']}/{count} waiting and {t['paired']}/{pairs} together paired")
            x = runs[name]
            x["waiting"].append(w["pairings_per_s"])
            x["together"].append(t["pairings_per_s"])
            x["rss_waiting_kib"].append(w["server_rss_waiting_kib"])
            x["waiting_cpu"].append(w.get("server_cpu_share", 0))
            x["together_cpu"].append(t.get("server_cpu_share", 0))
            x["together_retries"].append(t["receiver_retries"])
            log(f"  round {r + 1}/{rounds} {name}: waiting {w['pairings_per_s']:.0f}/s, together {t['pairings_per_s']:.0f}/s, "
                f"RSS {w['server_rss_waiting_kib'] / 1024:.1f} MiB")
    med = {name: {k: median(v) for k, v in x.items()} for name, x in runs.items()}
    res = {"initiators": count, "pairs": pairs, "rounds": rounds, "runs": runs, "median": med,
           "load_generator": "stunturn-bench signaling (epoll, one thread, original-protocol hellos, 256 in flight)",
           "targets": {"rss_waiting_mib": 50},
           "reference_go_issue": {"together_pairings_per_s": 6000, "waiting_pairings_per_s": 18800, "rss_waiting_mb": 70.5}}
    if "go original" in med:
        g, s = med["go original"], med["stunturn"]
        res["ratios"] = {"waiting": s["waiting"] / g["waiting"], "together": s["together"] / g["together"],
                         "rss": s["rss_waiting_kib"] / g["rss_waiting_kib"]}
    return res


# ---------------------------------------------------------------- agent footprint

def write_config(path, server, forwards):
    with open(path, "w") as f:
        f.write(f"server: {HOST}:{server}\nlog_level: warning\nforwards:\n")
        for fw in forwards:
            f.write(f"  - name: {fw['name']}\n")
            for k in ("expose", "listen"):
                if k in fw:
                    f.write(f"    {k}: {HOST}:{fw[k]}\n")
            f.write(f"    key: {fw['key']}\n")


class HoldClient(asyncio.Protocol):
    def __init__(self, ready):
        self.ready = ready

    def connection_made(self, transport):
        transport.write(b"x")

    def data_received(self, data):
        if not self.ready.done():
            self.ready.set_result(True)

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before echo"))


async def hold_connections(port, count, batch, pids):
    loop = asyncio.get_running_loop()
    transports, failed = [], 0
    t0 = time.perf_counter()

    async def one():
        ready = loop.create_future()
        t, _ = await loop.create_connection(lambda: HoldClient(ready), HOST, port)
        try:
            await asyncio.wait_for(ready, 5)
        except BaseException:
            t.close()
            raise
        return t
    # Failed set-ups are retried, within a bounded number of attempts and time.
    for _ in range(count * 2 // batch):
        if len(transports) >= count:
            break
        if time.perf_counter() - t0 > 240:
            log("  footprint: time budget spent, stopping early")
            break
        got = await asyncio.gather(*(one() for _ in range(min(batch, count - len(transports)))), return_exceptions=True)
        for g in got:
            if isinstance(g, BaseException):
                failed += 1
            else:
                transports.append(g)
    took = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    rss = {name: rss_kib(pid) for name, pid in pids.items()}
    hwm = {name: rss_kib(pid, "VmHWM") for name, pid in pids.items()}
    for t in transports:
        t.close()
    await asyncio.sleep(0.5)
    return {"open": len(transports), "failed": failed, "seconds_to_open": took, "rss_kib": rss, "hwm_kib": hwm}


def bench_footprint(env, connections):
    echo = env.echo_server()
    server = env.server()
    keys = [subprocess.check_output([env.agent, "keygen"], text=True).strip() for _ in range(10)]
    lports = [free_port() for _ in range(10)]
    exp_cfg, lis_cfg = os.path.join(env.tmp, "expose.yaml"), os.path.join(env.tmp, "listen.yaml")
    write_config(exp_cfg, server, [{"name": f"exp{i}", "expose": echo, "key": keys[i]} for i in range(10)])
    write_config(lis_cfg, server, [{"name": f"lis{i}", "listen": lports[i], "key": keys[i]} for i in range(10)])
    e = PROCS.start([env.agent, "run", "--config", exp_cfg], log=env.logfile("run-expose"))
    l = PROCS.start([env.agent, "run", "--config", lis_cfg], log=env.logfile("run-listen"))
    for p in lports:
        wait_port(p)
    time.sleep(2.0)
    idle = {"expose agent": rss_kib(e.pid), "listen agent": rss_kib(l.pid)}
    echo_once(lports[0])  # one relayed connection first, so lazy set-up is not counted as load
    held = asyncio.run(hold_connections(lports[0], connections, 20, {"expose agent": e.pid, "listen agent": l.pid}))
    return {"forwards_per_agent": 10, "idle_rss_kib": idle, "connections": connections, **held,
            "targets": {"rss_mib_with_1000_connections": 100}}


# ---------------------------------------------------------------- sessions

def run_mixed_server(port):
    """A service for one forward that carries both kinds of stream: a first byte 'E' echoes
    (interactive), 'D' discards and answers the byte count at the end (bulk)."""
    async def handle(reader, writer):
        mode = await reader.read(1)
        if mode == b"E":
            await echo(reader, writer)
        elif mode == b"D":
            total = 0
            while data := await reader.read(1 << 20):
                total += len(data)
            writer.write(f"{total}\n".encode())
            await writer.drain()

    serve_tcp(handle, port)


def bulk_send(port, seconds, stop=None):
    """Sends as fast as the path takes for `seconds` (or until `stop` is set); Gbit/s delivered,
    as counted by the service."""
    block = os.urandom(256 * 1024)
    sent = 0
    with socket.create_connection((HOST, port), timeout=30) as s:
        s.sendall(b"D")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds and not (stop and stop.is_set()):
            s.sendall(block)
            sent += len(block)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                break
            answer += chunk
        took = time.perf_counter() - t0
    got = int(answer.strip() or 0)
    if got != sent:
        raise RuntimeError(f"bulk stream: sent {sent} bytes, the service counted {got}")
    return got * 8 / took / 1e9


def interactive_probe(port, seconds, interval=0.01):
    """One stream, one byte echoed every `interval`: each round trip in ms."""
    rtts = []
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E")
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError("interactive echo failed")
            rtts.append((time.perf_counter() - t0) * 1000)
            time.sleep(interval)
    return rtts


def bench_sessions(env, baseline, rounds, seconds, count):
    """The session against the per-connection tunnel it replaced (`baseline`, an older agent),
    in the same run: one stream's throughput and relay CPU per GB, a new connection's time to
    first echoed byte, and an interactive stream beside a bulk one on the same session."""
    import threading
    results = {}
    server = env.server()
    # Throughput of one stream, interleaved with the baseline and direct.
    iport = free_port()
    PROCS.start(["iperf3", "-s", "-B", HOST, "-p", str(iport)], log=env.logfile("iperf3-sessions"))
    wait_port(iport)
    agents = {"session": env.agent}
    if baseline:
        agents["per-connection (baseline)"] = baseline
    targets, relays = {"direct": iport}, {"direct": []}
    for name, binary in agents.items():
        lport, e, l = Env(binary, env.tmp).agent_pair(server, iport)
        targets[name], relays[name] = lport, [e.pid, l.pid]
    rates = {n: [] for n in targets}
    cpu = {n: [] for n in targets}
    for r in range(rounds):
        names = list(targets)[r % len(targets):] + list(targets)[:r % len(targets)]
        for name in names:
            c0 = sum(tree_cpu(p) for p in relays[name])
            rate, carried, _ = iperf(targets[name], seconds)
            rates[name].append(rate)
            cpu[name].append((sum(tree_cpu(p) for p in relays[name]) - c0) / (carried / 1e9))
        log(f"  throughput round {r + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.2f} Gbit/s" for n in targets))
    results["throughput"] = {"gbit_s": {n: median(v) for n, v in rates.items()},
                             "relay_cpu_s_per_gb": {n: median(v) for n, v in cpu.items() if n != "direct"},
                             "runs": rates, "cpu_runs": cpu}
    # Time to first echoed byte on a new connection.
    echo = env.echo_server()
    ttfb_targets = {"direct": echo}
    for name, binary in agents.items():
        ttfb_targets[name] = Env(binary, env.tmp).agent_pair(server, echo)[0]
    for port in ttfb_targets.values():
        echo_once(port)
    samples = {n: [] for n in ttfb_targets}
    for _ in range(count):
        for name, port in ttfb_targets.items():
            samples[name].append(echo_once(port, timeout=10) * 1000)
        time.sleep(0.01)
    results["ttfb_ms"] = {n: {"median": median(v), "p90": pct(v, 90), "n": len(v)} for n, v in samples.items()}
    # An interactive stream beside a bulk one, on the one session; with a baseline, the same
    # through it (two connections, two tunnels) in the same rounds, interleaved, for reference.
    mixed = free_port()
    PROCS.start([sys.executable, os.path.abspath(__file__), "mixed-server", str(mixed)], log=env.logfile("mixed"))
    wait_port(mixed)
    mports = {name: Env(binary, env.tmp).agent_pair(server, mixed)[0] for name, binary in agents.items()}
    for mport in mports.values():
        interactive_probe(mport, 0.5)
    runs = {name: {"solo": [], "shared": [], "alone": [], "beside": []} for name in mports}
    for r in range(rounds):
        names = list(mports)[r % len(mports):] + list(mports)[:r % len(mports)]
        for name in names:
            mport, run = mports[name], runs[name]
            run["solo"].append(bulk_send(mport, seconds))
            run["alone"] += interactive_probe(mport, 2)
            box = {}

            def probe():
                try:
                    box["rtts"] = interactive_probe(mport, seconds - 1)
                except Exception as exc:  # raised in this thread after the join, not lost
                    box["error"] = exc
            t = threading.Thread(target=probe)
            t.start()
            run["shared"].append(bulk_send(mport, seconds))
            t.join()
            if "error" in box:
                raise RuntimeError(f"interactive probe beside bulk, {name}: {box['error']!r}")
            run["beside"] += box.get("rtts", [])
            log(f"  mixed round {r + 1}/{rounds}, {name}: bulk solo {run['solo'][-1]:.2f}, beside interactive "
                f"{run['shared'][-1]:.2f} Gbit/s, interactive median {median(box.get('rtts', [])):.2f} ms, "
                f"p99 {pct(box.get('rtts', []), 99):.2f} ms")
    for name, run in runs.items():
        key = "mixed" if name == "session" else "mixed_baseline"
        results[key] = {
            "bulk_solo_gbit_s": median(run["solo"]), "bulk_beside_interactive_gbit_s": median(run["shared"]),
            "bulk_ratio": median(run["shared"]) / median(run["solo"]) if run["solo"] else float("nan"),
            "interactive_alone_ms": {"median": median(run["alone"]), "p99": pct(run["alone"], 99), "n": len(run["alone"])},
            "interactive_beside_bulk_ms": {"median": median(run["beside"]), "p99": pct(run["beside"], 99), "n": len(run["beside"])},
        }
    results["targets"] = {"one stream relay CPU-s/GB vs baseline": "within 5 %", "ttfb vs direct": "within 0.5 ms",
                          "interactive p99 beside bulk": "< 25 ms", "bulk beside interactive": "≥ 80 % of solo"}
    return results


# ---------------------------------------------------------------- relay

def iperf_all_bytes(port, seconds):
    """As `iperf`, but the bytes are every byte the run sent, its omitted first second included:
    the CPU counters run over the whole transfer, so CPU per GB divides by all of it."""
    data, client_cpu = iperf_run(port, seconds)
    carried = sum(i["sum"]["bytes"] for i in data["intervals"])
    return data["end"]["sum_received"]["bits_per_second"] / 1e9, carried, client_cpu


def descriptors(pid):
    """Open descriptors by kind: socket, pipe, anon_inode:[eventpoll], a file's path..."""
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def bench_relay_throughput(env, rounds, seconds):
    """One bulk stream relayed by the signaling server (both agents `--relay only`, no rate
    limit), beside one socat hop: alone at its own rate, and in front of the relayed path so
    that it carries the very same bytes at the same moment as the server."""
    iport = free_port()
    iperf_server = PROCS.start(["iperf3", "-s", "-B", HOST, "-p", str(iport)], log=env.logfile("iperf3-relay"))
    wait_port(iport)
    server = env.server("--relay-rate", "0")
    spid = PROCS.procs[-1].pid
    lport, e, l = env.agent_pair(server, iport, extra=["--relay", "only"])
    socat_alone, socat_front = free_port(), free_port()
    alone = PROCS.start(["socat", "-b", "262144", f"TCP-LISTEN:{socat_alone},bind={HOST},fork,reuseaddr", f"TCP:{HOST}:{iport}"])
    front = PROCS.start(["socat", "-b", "262144", f"TCP-LISTEN:{socat_front},bind={HOST},fork,reuseaddr", f"TCP:{HOST}:{lport}"])
    wait_port(socat_alone)
    wait_port(socat_front)
    # The session up and warm before anything is counted. The port probes above reach iperf3
    # through the forwards a moment later, and iperf3 refuses a test while it handles one.
    for attempt in range(5):
        time.sleep(0.5)
        try:
            iperf_all_bytes(lport, 1)
            break
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            log(f"  warm-up through the relay failed ({exc}); retrying")
    paths = {"relayed": lport, "socat": socat_alone, "socat + relayed": socat_front}
    # What each path's CPU is read from: the server alone (utime + stime of its process), each
    # agent, and socat with its forked children (one per connection iperf3 makes).
    meters = {
        "relayed": {"server": lambda: cpu_seconds(spid), "expose agent": lambda: cpu_seconds(e.pid),
                    "listen agent": lambda: cpu_seconds(l.pid)},
        "socat": {"socat": lambda: tree_cpu(alone.pid)},
        "socat + relayed": {"server": lambda: cpu_seconds(spid), "socat": lambda: tree_cpu(front.pid),
                            "expose agent": lambda: cpu_seconds(e.pid), "listen agent": lambda: cpu_seconds(l.pid)},
    }
    rates = {n: [] for n in paths}
    cpu = {n: {m: [] for m in [*meters[n], "iperf3 ends"]} for n in paths}
    server_share = {n: [] for n in paths if "server" in meters[n]}
    for r in range(rounds):
        names = list(paths)[r % len(paths):] + list(paths)[:r % len(paths)]
        for name in names:
            for attempt in range(3):
                try:
                    c0 = {m: f() for m, f in meters[name].items()}
                    s0 = tree_cpu(iperf_server.pid)
                    t0 = time.monotonic()
                    rate, carried, client_cpu = iperf_all_bytes(paths[name], seconds)
                    took = time.monotonic() - t0
                    time.sleep(0.3)  # socat's forked children exit and are reaped into its total
                    gb = carried / 1e9
                    used = {m: f() - c0[m] for m, f in meters[name].items()}
                    if "server" in used and used["server"] < 0.05 * took:
                        raise RuntimeError(f"the server used {used['server']:.2f} CPU-s in {took:.1f} s: not relayed")
                    rates[name].append(rate)
                    for m, u in used.items():
                        cpu[name][m].append(u / gb)
                    cpu[name]["iperf3 ends"].append((tree_cpu(iperf_server.pid) - s0 + client_cpu) / gb)
                    if name in server_share:
                        server_share[name].append(used["server"] / took)
                    break
                except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
                    log(f"  iperf3 via {name} failed ({exc}); retrying")
                    time.sleep(1)
        same = cpu["socat + relayed"]
        log(f"  round {r + 1}/{rounds}: relayed {rates['relayed'][-1]:.2f} Gbit/s, server {cpu['relayed']['server'][-1]:.3f} CPU-s/GB; "
            f"socat alone {rates['socat'][-1]:.2f} Gbit/s, {cpu['socat']['socat'][-1]:.3f}; same stream "
            f"{rates['socat + relayed'][-1]:.2f} Gbit/s: server {same['server'][-1]:.3f}, socat {same['socat'][-1]:.3f} CPU-s/GB")
    med_cpu = {n: {m: median(v) for m, v in x.items()} for n, x in cpu.items()}
    same = cpu["socat + relayed"]
    return {
        "unit": "Gbit/s", "seconds": seconds, "rounds": rounds, "runs": rates,
        "median": {n: median(v) for n, v in rates.items()},
        "cpu_s_per_gb": med_cpu, "cpu_runs": cpu,
        "server_cpu_share": {n: median(v) for n, v in server_share.items()},
        "ratios": {
            "server / socat alone": med_cpu["relayed"]["server"] / med_cpu["socat"]["socat"],
            # Per round, the server's and socat's CPU for the same bytes in the same seconds.
            "server / socat, same stream": median([s / c for s, c in zip(same["server"], same["socat"])]),
        },
        "targets": {"server CPU-s/GB vs socat's": "≤ 1.0x"},
    }


def relay_hellos(key):
    i = {"uuid": key, "target_ip": "", "protocol": "tcp", "address": "", "role": "initiator", "relay": "only"}
    r = {"uuid": key, "target_ip": "", "protocol": "", "address": "", "role": "receiver", "wait": 25, "relay": "only"}
    return i, r


async def signal_once(port, hello, timeout=30.0):
    """One hello on a new connection; the server's one reply, read to its close."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write((json.dumps(hello, separators=(",", ":")) + "\n").encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return json.loads(data) if data.strip() else {"error": "closed without a reply"}


async def pair_for_relay(port, key):
    """An initiator and a receiver on `key`, both asking for the relay; the initiator's reply."""
    i, r = relay_hellos(key)
    ir, rr = await asyncio.gather(signal_once(port, i), signal_once(port, r))
    if ir.get("relay_id") != rr.get("relay_id"):
        return {"error": "the two sides were told different relay ids"}
    return ir


async def join_relay(port, key, role, relay_id, timeout=15.0):
    """A relay connection for one side; (reader, writer) once the server has joined it to the
    other side, or None, and the server's reply line."""
    reader, writer = await asyncio.open_connection(HOST, port)
    hello = {"uuid": key, "target_ip": "", "protocol": "relay", "address": "", "role": role, "relay_id": relay_id}
    writer.write((json.dumps(hello, separators=(",", ":")) + "\n").encode())
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        line = exc.partial
    except BaseException:
        writer.close()
        raise
    reply = json.loads(line) if line.strip() else {"error": "closed without a reply"}
    if reply.get("error") or reply.get("protocol") != "relay":
        writer.close()
        return None, reply
    return (reader, writer), reply


async def relayed_session(port, key):
    """Pairs on `key`, joins both sides and passes a byte each way through the relay; the two
    writers to hold the session open, or None and why."""
    ir = await pair_for_relay(port, key)
    rid = ir.get("relay_id")
    if not rid:
        return None, ir.get("relay_refused") or ir.get("error") or "no relay id"
    (a, ar), (b, br) = await asyncio.gather(join_relay(port, key, "initiator", rid), join_relay(port, key, "receiver", rid))
    if a is None or b is None:
        for side in (a, b):
            if side:
                side[1].close()
        return None, (ar if a is None else br).get("error", "join failed")
    try:
        a[1].write(b"x")
        if await asyncio.wait_for(b[0].readexactly(1), 10) != b"x":
            raise RuntimeError("wrong byte")
        b[1].write(b"y")
        if await asyncio.wait_for(a[0].readexactly(1), 10) != b"y":
            raise RuntimeError("wrong byte")
    except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
        a[1].close()
        b[1].close()
        return None, f"no byte through the relay: {exc!r}"
    return (a, b), None


async def bounded(coros, window):
    """Runs the coroutines `window` at a time; their results, exceptions included."""
    sem = asyncio.Semaphore(window)

    async def one(c):
        async with sem:
            return await c
    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


def tally(results, classify):
    counts = {}
    for x in results:
        k = f"failed: {type(x).__name__}" if isinstance(x, BaseException) else classify(x)
        counts[k] = counts.get(k, 0) + 1
    return counts


def server_state(pid):
    kinds = descriptors(pid)
    return {"rss_kib": rss_kib(pid), "hwm_kib": rss_kib(pid, "VmHWM"), "descriptors": sum(kinds.values()),
            "descriptor_kinds": kinds}


async def relay_load(port, pid, server_log, sessions, over, flood, window):
    """The server's footprint with `sessions` relayed sessions up, and its relay limits under
    floods, from a client speaking the signaling protocol itself (docs/PROTOCOL.md): each
    session is a pairing with relay ids and two relay connections the server joins."""
    prefix = os.urandom(6).hex()
    res = {"sessions": sessions}
    await asyncio.sleep(1.0)
    res["idle"] = server_state(pid)
    # 1. `sessions` relayed sessions at once, each on a key of its own, `window` set up at a time.
    t0 = time.perf_counter()
    got = await bounded([relayed_session(port, f"{prefix}-s{i}") for i in range(sessions)], window)
    took = time.perf_counter() - t0
    held = [x[0] for x in got if not isinstance(x, BaseException) and x[0]]
    res["setup"] = {"up": len(held), "seconds": took,
                    "failed": tally([x for x in got if isinstance(x, BaseException) or not x[0]],
                                    lambda x: x[1])}
    log(f"  {len(held)} of {sessions} relayed sessions up in {took:.1f} s")
    await asyncio.sleep(1.0)
    res["up"] = server_state(pid)
    # 2. Past the server's session limit: pairings that ask for the relay are paired but refused it.
    refused_before = count_lines(server_log, "relay refused: session limit reached")
    got = await bounded([pair_for_relay(port, f"{prefix}-o{i}") for i in range(over)], window)
    res["over_limit"] = {"pairings": over,
                         "replies": tally(got, lambda r: "granted" if r.get("relay_id") else
                                          "refused: relay full" if "relay is full" in r.get("relay_refused", "") else
                                          f"other: {r.get('relay_refused') or r.get('error')}"),
                         "server_log_refusals": count_lines(server_log, "relay refused: session limit reached") - refused_before}
    # 3. A flood of relay hellos naming ids the server never granted.
    t0 = time.perf_counter()
    got = await bounded([signal_once(port, {"uuid": f"{prefix}-f{i}", "target_ip": "", "protocol": "relay", "address": "",
                                            "role": "initiator", "relay_id": os.urandom(16).hex()}, timeout=10)
                         for i in range(flood)], 256)
    took = time.perf_counter() - t0
    res["unknown_ids"] = {"hellos": flood, "seconds": took,
                          "replies": tally(got, lambda r: "refused: unknown id" if "no pairing with that relay id" in r.get("error", "")
                                           else f"other: {r}")}
    res["after_floods"] = server_state(pid)
    # The held sessions still carry bytes after the floods.
    async def still_relays(a, b):
        a[1].write(b"z")
        return await asyncio.wait_for(b[0].readexactly(1), 10) == b"z"
    checked = await bounded([still_relays(a, b) for a, b in held], window)
    res["after_floods"]["sessions_still_relaying"] = sum(1 for x in checked if x is True)
    # 4. The sessions end.
    for a, b in held:
        a[1].close()
        b[1].close()
    await asyncio.sleep(2.0)
    res["ended"] = server_state(pid)
    # 5. One key's limit, and grants nobody completes: 12 pairings on one key, 8 get a relay;
    #    one side joins 4 of them and the other never comes; after the server's wait (10 s) the
    #    joined sides are refused, the grants end, and the key is granted a relay again.
    key = f"{prefix}-k"
    replies = await asyncio.gather(*(pair_for_relay(port, key) for _ in range(12)))
    ids = [r["relay_id"] for r in replies if r.get("relay_id")]
    per_key = {"pairings": 12, "granted": len(ids),
               "refused": sum(1 for r in replies if "already has" in r.get("relay_refused", ""))}
    t0 = time.perf_counter()
    halves = await asyncio.gather(*(join_relay(port, key, "initiator", rid, timeout=20) for rid in ids[:4]),
                                  return_exceptions=True)
    per_key["half_joined"] = len(halves)
    per_key["half_joined_replies"] = tally(halves, lambda x: "joined (should not be)" if x[0] else
                                           "refused: peer missing" if "did not connect" in x[1].get("error", "")
                                           else f"other: {x[1]}")
    per_key["half_joined_refused_after_s"] = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    again = await relayed_session(port, key)
    per_key["key_relayed_again"] = again[0] is not None
    if again[0]:
        for side in again[0]:
            side[1].close()
    else:
        per_key["again_error"] = again[1]
    res["per_key"] = per_key
    await asyncio.sleep(1.0)
    res["final"] = server_state(pid)
    return res


def count_lines(path, text):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if text in line)
    except OSError:
        return 0


def bench_relay(env, rounds, seconds, sessions, over, flood):
    """Relaying by the signaling server: one stream's throughput and the server's CPU per GB
    beside socat's, then its RSS and descriptors with `sessions` relayed sessions, and the
    limits under floods."""
    results = {"throughput": bench_relay_throughput(env, rounds, seconds)}
    PROCS.stop_all()
    # The server with its default relay limits, spelled out.
    # Every client of the bench is at 127.0.0.1: the per-address limit would stop it at 32.
    server = env.server("--relay-max-sessions", "1000", "--relay-max-per-key", "8", "--relay-max-per-address", "100000")
    pid = PROCS.procs[-1].pid
    results["load"] = asyncio.run(relay_load(server, pid, env.logfile(f"server-{server}"), sessions, over, flood, window=50))
    results["load"]["server_limits"] = {"relay_max_sessions": 1000, "relay_max_per_key": 8, "relay_wait_s": 10}
    return results


# ---------------------------------------------------------------- report

def relay_rows(rl):
    rows = []
    t = rl.get("throughput")
    if t:
        m, c, ratio = t["median"], t["cpu_s_per_gb"], t["ratios"]
        rel, so, same = c["relayed"], c["socat"], c["socat + relayed"]
        rows.append(("Relayed through the server, one stream", f"{m['relayed']:.2f} Gbit/s",
                     f"server {rel['server']:.3f} CPU-s/GB ({t['server_cpu_share']['relayed']:.0%} of a core), "
                     f"{ratio['server / socat alone']:.2f}x socat alone; agents {rel['expose agent']:.3f} + {rel['listen agent']:.3f}",
                     "server ≤ 1.0x socat"))
        rows.append(("One socat -b 262144 hop, alone (reference)", f"{m['socat']:.2f} Gbit/s", f"socat {so['socat']:.3f} CPU-s/GB", ""))
        rows.append(("Same stream: socat hop in front of the relayed path", f"{m['socat + relayed']:.2f} Gbit/s",
                     f"server {same['server']:.3f}, socat {same['socat']:.3f} CPU-s/GB: server "
                     f"{ratio['server / socat, same stream']:.2f}x socat", "server ≤ 1.0x socat"))
    ld = rl.get("load")
    if ld:
        mib = lambda s: f"{s['rss_kib'] / 1024:.1f}"
        st = ld["setup"]
        rows.append((f"Server RSS, {ld['sessions']} relayed sessions",
                     f"idle {mib(ld['idle'])}, up {mib(ld['up'])}, ended {mib(ld['ended'])} MiB",
                     f"{st['up']} up in {st['seconds']:.1f} s, failed {sum(st['failed'].values())}; descriptors "
                     f"{ld['idle']['descriptors']}, {ld['up']['descriptors']} ({ld['up']['descriptor_kinds'].get('socket', 0)} sockets, "
                     f"{ld['up']['descriptor_kinds'].get('pipe', 0)} pipe ends), {ld['ended']['descriptors']}", ""))
        o = ld["over_limit"]
        rows.append((f"{o['pairings']} more pairings past --relay-max-sessions",
                     f"{o['replies'].get('refused: relay full', 0)} refused, {o['replies'].get('granted', 0)} granted",
                     f"server logged {o['server_log_refusals']} refusals; {o['replies']}", "all refused"))
        u, a = ld["unknown_ids"], ld["after_floods"]
        rows.append((f"{u['hellos']} relay hellos with unknown ids", f"{u['replies'].get('refused: unknown id', 0)} refused",
                     f"{u['hellos'] / u['seconds']:.0f}/s; RSS after both floods {mib(a)} MiB (peak {a['hwm_kib'] / 1024:.1f}), "
                     f"{a['sessions_still_relaying']} sessions still relaying", "all refused, RSS bounded"))
        k = ld["per_key"]
        rows.append(("12 pairings on one key (--relay-max-per-key 8)", f"{k['granted']} granted, {k['refused']} refused",
                     f"{k['half_joined']} half-joined: {k['half_joined_replies']} after {k['half_joined_refused_after_s']:.1f} s; "
                     f"relayed again after: {k['key_relayed_again']}; final RSS {mib(ld['final'])} MiB", "8 granted"))
    return rows


def table(res):
    rows = []
    t = res.get("throughput")
    if t:
        m, r = t["median"], t["ratios"]
        rows.append(("Throughput, direct loopback (reference)", f"{m['direct']:.2f} Gbit/s", "", ""))
        cpu = t.get("relay_cpu_s_per_gb", {})
        def c(name):
            return f"relays {cpu[name]:.2f} CPU-s/GB" if name in cpu else ""
        rows.append(("Throughput, socat -b 262144 x2 (reference)", f"{m['socat x2']:.2f} Gbit/s", c("socat x2"), ""))
        rows.append(("Throughput, ssh -L aes128-gcm (reference)", f"{m['ssh -L aes128-gcm']:.2f} Gbit/s", c("ssh -L aes128-gcm"), ""))
        rows.append(("Throughput, stunturn (encrypted)", f"{m['stunturn']:.2f} Gbit/s",
                     f"{r['stunturn / socat x2']:.2f}x socat, {r['stunturn / ssh -L']:.2f}x ssh; {c('stunturn')}",
                     "≥ 1.0x socat, ≥ 1.0x ssh"))
        rows.append(("Throughput, stunturn --plaintext-insecure", f"{m['stunturn plaintext']:.2f} Gbit/s",
                     f"{r['plaintext / socat x2']:.2f}x socat; {c('stunturn plaintext')}", "stretch ≥ 1.3x socat"))
        rec, ceiling = t.get("record_layer"), t.get("encrypted_ceiling")
        if rec and ceiling:
            rows.append(("Cipher alone (AES-256-GCM records, in memory)",
                         f"seal {rec['seal_cpu_s_per_gb']:.3f} + open {rec['open_cpu_s_per_gb']:.3f} CPU-s/GB",
                         f"socat's relays plus the cipher: {ceiling['relay_cpu_s_per_gb']:.2f} CPU-s/GB, "
                         f"at most {ceiling['ratio_to_socat']:.2f}x socat", ""))
    l = res.get("latency")
    if l:
        for name, label in (("direct", "Setup latency, direct to echo (reference)"),
                            ("stunturn", "Setup latency, stunturn (encrypted)"),
                            ("stunturn plaintext", "Setup latency, stunturn plaintext")):
            s = l["summary"][name]
            rows.append((label, f"median {s['median']:.2f} ms, p90 {s['p90']:.2f} ms",
                         f"n={s['n']}, failures {s['failures']}",
                         "median ≤ 50 ms (stretch ≤ 10)" if name == "stunturn" else ""))
    s = res.get("signaling")
    if s:
        m, go = s["median"]["stunturn"], s["median"].get("go original")
        ratio = s.get("ratios", {})
        def vs(key, ratio_key, fmt):
            return f"Go original {fmt(go[key])}, ratio {ratio[ratio_key]:.2f}x" if go else "Go original not run (--go-server)"
        rows.append((f"Signaling server RSS, {s['initiators']} initiators waiting", f"{m['rss_waiting_kib'] / 1024:.1f} MiB",
                     vs("rss_waiting_kib", "rss", lambda v: f"{v / 1024:.1f} MiB"), "≤ 50 MiB"))
        rows.append(("Pairings/s, initiators already waiting", f"{m['waiting']:.0f}/s",
                     f"server CPU {m['waiting_cpu']:.0%}; " + vs("waiting", "waiting", lambda v: f"{v:.0f}/s"), "≥ Go original"))
        rows.append(("Pairings/s, pairs arriving together", f"{m['together']:.0f}/s",
                     f"server CPU {m['together_cpu']:.0%}; " + vs("together", "together", lambda v: f"{v:.0f}/s"), "≥ Go original"))
    f = res.get("footprint")
    if f:
        i = f["idle_rss_kib"]
        rows.append(("Agent RSS idle, 10 forwards", f"expose {i['expose agent'] / 1024:.1f} MiB, listen {i['listen agent'] / 1024:.1f} MiB", "", ""))
        r = f["rss_kib"]
        rows.append((f"Agent RSS, {f['open']} relayed connections open",
                     f"expose {r['expose agent'] / 1024:.1f} MiB, listen {r['listen agent'] / 1024:.1f} MiB",
                     f"{f['failed']} failed, opened in {f['seconds_to_open']:.1f} s", "≤ 100 MiB"))
    se = res.get("sessions")
    if se:
        g, c = se["throughput"]["gbit_s"], se["throughput"]["relay_cpu_s_per_gb"]
        base = "per-connection (baseline)"
        for name in [n for n in ("direct", "session", base) if n in g]:
            detail = f"relays {c[name]:.3f} CPU-s/GB" if name in c else ""
            if name == "session" and base in c:
                detail += f", {c['session'] / c[base]:.3f}x the baseline's"
            rows.append((f"One stream, {name}", f"{g[name]:.2f} Gbit/s", detail,
                         "CPU-s/GB within 5 % of the baseline" if name == "session" else ""))
        t = se["ttfb_ms"]
        for name in t:
            extra = f"+{t[name]['median'] - t['direct']['median']:.2f} ms vs direct" if name != "direct" else ""
            rows.append((f"New connection, first echoed byte, {name}", f"median {t[name]['median']:.2f} ms, p90 {t[name]['p90']:.2f} ms",
                         extra, "within 0.5 ms of direct" if name == "session" else ""))
        for key, label, targets in (("mixed", "one session", ("p99 < 25 ms", "≥ 0.8x solo")),
                                    ("mixed_baseline", "per-connection (baseline)", ("reference", "reference"))):
            m = se.get(key)
            if not m:
                continue
            rows.append((f"Interactive echo beside a bulk stream, {label}",
                         f"p99 {m['interactive_beside_bulk_ms']['p99']:.2f} ms (alone {m['interactive_alone_ms']['p99']:.2f} ms)",
                         f"median {m['interactive_beside_bulk_ms']['median']:.2f} ms, n={m['interactive_beside_bulk_ms']['n']}", targets[0]))
            rows.append((f"Bulk stream beside the interactive one, {label}", f"{m['bulk_beside_interactive_gbit_s']:.2f} Gbit/s",
                         f"{m['bulk_ratio']:.2f}x its solo {m['bulk_solo_gbit_s']:.2f} Gbit/s", targets[1]))
    rl = res.get("relay")
    if rl:
        rows += relay_rows(rl)
    w = [max(len(r[c]) for r in rows + [("Measure", "Result", "Detail", "Target / reference")]) for c in range(4)]
    out = ["| " + " | ".join(h.ljust(w[c]) for c, h in enumerate(("Measure", "Result", "Detail", "Target / reference"))) + " |",
           "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += ["| " + " | ".join(r[c].ljust(w[c]) for c in range(4)) + " |" for r in rows]
    return "\n".join(out)


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def serve_tcp(handle, port):
    """Runs an asyncio TCP server on HOST:port with `handle` for each connection, for ever; a
    connection that fails just ends, and is always closed."""
    async def guarded(reader, writer):
        try:
            await handle(reader, writer)
        except OSError:
            pass
        finally:
            writer.close()

    async def main():
        srv = await asyncio.start_server(guarded, HOST, port, backlog=4096)
        async with srv:
            await srv.serve_forever()
    asyncio.run(main())


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def run_echo_server(port):
    serve_tcp(echo, port)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo-server")
    e.add_argument("port", type=int)
    m = sub.add_parser("mixed-server")
    m.add_argument("port", type=int)
    r = sub.add_parser("run")
    r.add_argument("--agent", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", default="throughput,latency,signaling,footprint,sessions,relay")
    r.add_argument("--bench", required=True, help="the stunturn-bench load generator")
    r.add_argument("--go-server", help="the Go original's signaling server binary, measured beside ours")
    r.add_argument("--baseline-agent", help="an older stunturn-agent (one tunnel per connection), measured beside this one")
    a = ap.parse_args()
    if a.cmd == "echo-server":
        run_echo_server(a.port)
        return
    if a.cmd == "mixed-server":
        run_mixed_server(a.port)
        return

    def on_signal(signum, frame):
        PROCS.stop_all()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    q = a.quick
    plan = {
        "throughput": lambda env: bench_throughput(env, rounds=3 if q else 5, seconds=3 if q else 6, quick=q),
        "latency": lambda env: bench_latency(env, count=20 if q else 50),
        "signaling": lambda env: bench_signaling(env, count=10000, pairs=5000 if q else 20000, rounds=2 if q else 5),
        "footprint": lambda env: bench_footprint(env, connections=300 if q else 1000),
        "sessions": lambda env: bench_sessions(env, a.baseline_agent, rounds=3 if q else 5, seconds=3 if q else 6,
                                               count=50 if q else 200),
        "relay": lambda env: bench_relay(env, rounds=3 if q else 5, seconds=3 if q else 6, sessions=1000,
                                         over=200 if q else 1000, flood=5000 if q else 20000),
    }
    results = {"machine": machine(), "quick": q, "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    tmp = tempfile.mkdtemp(prefix="stunturn-bench-")
    try:
        env = Env(a.agent, tmp, a.bench, a.go_server)
        for name in a.only.split(","):
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                results[name] = plan[name](env)
            except Exception as exc:  # one failed benchmark must not lose the others
                log(f"  {name} failed: {exc!r} (logs in {tmp})")
                results[name + "_error"] = repr(exc)
            finally:
                PROCS.stop_all()
            log(f"  ({time.monotonic() - t0:.0f} s)")
    finally:
        PROCS.stop_all()
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    if not any(k.endswith("_error") for k in results):
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
