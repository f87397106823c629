# Traffic for scripts/soak.sh: the exposed echo service, and the clients that drive it through
# the forwards and check every byte. Standard library only.
#
#   soak_traffic.py service PORT
#   soak_traffic.py clients --ports P1,P2 --seconds S --out FILE [--slots N] [--interactive N] [--rate B/s]
#   soak_traffic.py ready P1,P2 SECONDS
#   soak_traffic.py report --dir LOGDIR --minutes M [--recovery-limit S] [--rss-growth-limit PCT]
#
# Each connection starts with a 13-byte header the service does not echo: b"SOAK", a mode byte
# and, big-endian, the number of payload bytes after which the service resets the connection
# (0: never). Everything after the header is echoed.
import argparse, asyncio, hashlib, json, math, os, random, signal, socket, struct, sys, time

HEADER = struct.Struct("!4sBQ")
MAGIC = b"SOAK"
LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
STALL = 60.0        # a connection with no progress this long is given up as stalled
CONNECT_TIMEOUT = 10.0


# ---------------------------------------------------------------- the exposed service

def abort(writer):
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    except OSError:
        pass
    writer.transport.abort()


async def serve(port):
    open_writers = set()

    async def handle(reader, writer):
        open_writers.add(writer)
        try:
            head = await reader.readexactly(HEADER.size)
            magic, _, reset_after = HEADER.unpack(head)
            if magic != MAGIC:
                abort(writer); return
            echoed = 0
            while True:
                want = 65536 if not reset_after else min(65536, reset_after - echoed)
                data = await reader.read(want)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                echoed += len(data)
                if reset_after and echoed >= reset_after:
                    abort(writer); return
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            writer.transport.abort()
        finally:
            open_writers.discard(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    # A restarted service resets what it had open, as a crashed one does for connections with
    # unread data; a plain exit would FIN the others, and a FIN after part of an echo would look
    # to the client like a tunnel that cut it.
    server.close()
    for w in list(open_writers):
        abort(w)


# ---------------------------------------------------------------- clients

class Tally:
    def __init__(self):
        self.counts = {}
        self.by_mode = {}
        self.corrupted_bytes = 0
        self.verified_bytes = 0
        self.unplanned = []      # wall clock of each unplanned reset / cut / stall, for the report
        self.latencies = []      # (wall clock, ms) of interactive echoes
        self.probes = []         # (port, start, end, ok)
        self.examples = {}

    def add(self, outcome, mode, detail, at):
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        key = f"{mode}:{outcome}"
        self.by_mode[key] = self.by_mode.get(key, 0) + 1
        if outcome not in ("intact", "planned-reset"):
            self.unplanned.append((at, outcome))
            self.examples.setdefault(outcome, []).append(f"{at:.1f} {mode} {detail}")


def log_uniform(lo, hi):
    return int(math.exp(random.uniform(math.log(lo), math.log(hi))))


class Connection:
    """One client connection: sends `size` bytes from the pool, checks every echoed byte."""

    def __init__(self, pool, port, size, mode, rate, tally):
        self.pool, self.port, self.size, self.mode, self.rate, self.tally = pool, port, size, mode, rate, tally
        self.offset = random.randrange(0, len(pool) - size)
        self.got = 0
        self.corrupt = 0
        self.progress = time.monotonic()

    def check(self, data):
        want = self.pool[self.offset + self.got:self.offset + self.got + len(data)]
        if want != data:
            bad = sum(1 for a, b in zip(want, data) if a != b) + max(0, len(data) - len(want))
            self.corrupt += bad
            return False
        self.got += len(data)
        self.progress = time.monotonic()
        return True

    async def run(self):
        mode = self.mode
        reset_after = 0
        if mode == "server-rst":
            reset_after = random.randint(1, max(1, self.size - 1))
        client_rst_at = random.randint(0, max(0, self.size - 1)) if mode == "client-rst" else None
        at = time.time()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), CONNECT_TIMEOUT)
        except (ConnectionResetError, asyncio.IncompleteReadError) as e:
            # Accepted and reset at once: the forward had nowhere to carry it (the service down).
            self.tally.add("refused", mode, type(e).__name__, at)
            return "refused"
        except (OSError, asyncio.TimeoutError) as e:
            self.tally.add("connect-failed", mode, type(e).__name__, at)
            return "connect-failed"
        sender = asyncio.create_task(self.send(writer, reset_after))
        outcome, detail = await self.receive(reader, writer, reset_after, client_rst_at)
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, Exception):
            pass
        if outcome not in ("planned-reset",) and not writer.transport.is_closing():
            writer.close()
        self.tally.verified_bytes += self.got
        self.tally.corrupted_bytes += self.corrupt
        self.tally.add(outcome, mode, detail, time.time())
        return outcome

    async def send(self, writer, reset_after):
        writer.write(HEADER.pack(MAGIC, 0, reset_after))
        sent = 0
        chunk = 16384
        start = time.monotonic()
        while sent < self.size:
            n = min(chunk, self.size - sent)
            writer.write(self.pool[self.offset + sent:self.offset + sent + n])
            sent += n
            await writer.drain()
            if self.rate:
                ahead = sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if self.mode == "half-close":
            writer.write_eof()

    async def receive(self, reader, writer, reset_after, client_rst_at):
        expect = reset_after if reset_after else self.size
        while True:
            if client_rst_at is not None and self.got >= client_rst_at:
                abort(writer)
                return "planned-reset", "client reset"
            if self.got >= expect and not reset_after:
                if self.mode == "half-close":
                    # All echoed: the service saw our FIN and must close now.
                    try:
                        rest = await asyncio.wait_for(reader.read(1), STALL)
                    except asyncio.TimeoutError:
                        return "stalled", "no FIN after the whole echo"
                    except (ConnectionError, OSError) as e:
                        return "reset", f"reset after the whole echo ({type(e).__name__})"
                    if rest:
                        self.check(rest)
                        return "corrupt", "data past the end"
                return "intact", ""
            want = 65536
            if client_rst_at is not None:
                want = max(1, min(want, client_rst_at - self.got)) if client_rst_at > self.got else 1
            try:
                data = await asyncio.wait_for(reader.read(want), STALL)
            except asyncio.TimeoutError:
                abort(writer)
                return "stalled", f"no byte for {STALL:.0f}s at {self.got}/{expect}"
            except (ConnectionError, OSError) as e:
                if reset_after:
                    return "planned-reset", f"service reset at {self.got}/{reset_after}"
                return "reset", f"{type(e).__name__} at {self.got}/{expect}"
            if not data:
                if reset_after:
                    return "cut", f"EOF instead of the service's reset at {self.got}/{reset_after}"
                return "cut", f"EOF at {self.got}/{expect}"
            if not self.check(data):
                abort(writer)
                return "corrupt", f"mismatch at {self.got}"
            if reset_after and self.got > reset_after:
                return "corrupt", "echo past the service's reset point"


async def interactive(pool, port, seconds, tally):
    """Small messages every 200 ms, each timed from send to its echo, for `seconds`; then FIN."""
    at = time.time()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT)
    except ConnectionResetError as e:
        tally.add("refused", "interactive", type(e).__name__, at)
        return "refused"
    except (OSError, asyncio.TimeoutError) as e:
        tally.add("connect-failed", "interactive", type(e).__name__, at)
        return "connect-failed"
    writer.write(HEADER.pack(MAGIC, 0, 0))
    end = time.monotonic() + seconds
    got = 0
    try:
        while time.monotonic() < end:
            off = random.randrange(0, len(pool) - 64)
            msg = pool[off:off + 64]
            t0 = time.perf_counter()
            writer.write(msg)
            await writer.drain()
            data = b""
            while len(data) < 64:
                d = await asyncio.wait_for(reader.read(64 - len(data)), STALL)
                if not d:
                    tally.verified_bytes += got
                    tally.add("cut", "interactive", f"EOF after {got} bytes", time.time())
                    return "cut"
                data += d
            if data != msg:
                tally.corrupted_bytes += sum(1 for a, b in zip(data, msg) if a != b)
                abort(writer)
                tally.add("corrupt", "interactive", f"mismatch after {got} bytes", time.time())
                return "corrupt"
            got += 64
            tally.latencies.append((time.time(), (time.perf_counter() - t0) * 1000))
            await asyncio.sleep(0.2)
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(1), STALL)
        tally.verified_bytes += got
        tally.add("intact" if not rest else "corrupt", "interactive", "", time.time())
        writer.close()
        return "intact" if not rest else "corrupt"
    except asyncio.TimeoutError:
        abort(writer)
        tally.verified_bytes += got
        tally.add("stalled", "interactive", f"no echo for {STALL:.0f}s after {got} bytes", time.time())
        return "stalled"
    except (ConnectionError, OSError) as e:
        tally.verified_bytes += got
        tally.add("reset", "interactive", f"{type(e).__name__} after {got} bytes", time.time())
        return "reset"


PROBE_LIMIT = 5.0  # 2 % loss can cost a connection a few retransmission time-outs (200 ms, 400 ms, ...)


async def probe(port, until, tally):
    """A new small connection every 0.5 s, 5 s each at most: when do new connections work?"""
    while time.monotonic() < until:
        start = time.time()
        ok = False
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_LIMIT)
            try:
                writer.write(HEADER.pack(MAGIC, 0, 0) + b"probe-%d" % port)
                writer.write_eof()
                data = await asyncio.wait_for(reader.read(100), PROBE_LIMIT - (time.time() - start))
                ok = data == b"probe-%d" % port
            finally:
                writer.transport.abort()
        except (OSError, asyncio.TimeoutError, ConnectionError):
            pass
        tally.probes.append((port, start, time.time(), ok))
        await asyncio.sleep(max(0.0, 0.5 - (time.time() - start)))


async def clients(args):
    ports = [int(p) for p in args.ports.split(",")]
    pool = os.urandom(args.max_size * 2)
    tally = Tally()
    begin = time.monotonic()
    until = begin + args.seconds
    modes = ["fin"] * 4 + ["half-close"] * 3 + ["client-rst"] * 3 + ["server-rst"] * 2

    # After a connection that did not end as planned, a slot waits a moment before the next
    # one, as a real client would, instead of hammering a forward that is recovering.
    async def bulk_slot():
        while time.monotonic() < until:
            port = random.choice(ports)
            size = log_uniform(args.min_size, args.max_size)
            outcome = await Connection(pool, port, size, random.choice(modes), args.rate, tally).run()
            if outcome not in ("intact", "planned-reset"):
                await asyncio.sleep(random.uniform(0.5, 1.5))

    async def interactive_slot():
        while time.monotonic() < until:
            outcome = await interactive(pool, random.choice(ports), random.uniform(20, 60), tally)
            if outcome != "intact":
                await asyncio.sleep(random.uniform(0.5, 1.5))

    tasks = [asyncio.create_task(bulk_slot()) for _ in range(args.slots - args.interactive)]
    tasks += [asyncio.create_task(interactive_slot()) for _ in range(args.interactive)]
    tasks += [asyncio.create_task(probe(p, until, tally)) for p in ports]
    # Past the end, connections in flight finish (each is bounded by STALL per byte).
    await asyncio.gather(*tasks)
    lat = sorted(ms for _, ms in tally.latencies)

    def pct(p):
        return round(lat[max(0, math.ceil(p / 100 * len(lat)) - 1)], 2) if lat else None

    summary = {
        "seconds": round(time.monotonic() - begin, 1),
        "counts": tally.counts, "by_mode": tally.by_mode,
        "corrupted_bytes": tally.corrupted_bytes, "verified_bytes": tally.verified_bytes,
        "latency_ms": {"n": len(lat), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(lat[-1], 2) if lat else None},
        "unplanned": tally.unplanned,
        "examples": {k: v[:10] for k, v in tally.examples.items()},
        "latencies": [(round(t, 2), round(ms, 2)) for t, ms in tally.latencies],
        "probes": tally.probes,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f)

# ---------------------------------------------------------------- readiness and the report

async def ready(ports, seconds):
    """Exit 0 once a probe works on every port, within `seconds`."""
    until = time.monotonic() + seconds
    tally = Tally()
    for port in ports:
        while True:
            tally.probes.clear()
            await probe(port, time.monotonic() + 0.01, tally)
            if tally.probes and tally.probes[-1][3]:
                break
            if time.monotonic() > until:
                print(f"port {port}: no working connection within {seconds}s")
                return 1
            await asyncio.sleep(0.5)
    return 0


def report(args):
    d = args.dir
    t = json.load(open(os.path.join(d, "traffic.json")))
    t0 = float(open(os.path.join(d, "start.txt")).read().split()[0])
    end = t0 + args.minutes * 60
    faults = []
    for line in open(os.path.join(d, "faults.tsv")):
        name, start, stop, note = line.rstrip("\n").split("\t")
        faults.append((name, float(start), float(stop), note))
    failures = []
    out = []
    counts = t["counts"]
    total = sum(counts.values())
    kinds = ["intact", "planned-reset", "reset", "refused", "cut", "stalled", "corrupt", "connect-failed"]
    out.append(f"SOAK minutes={args.minutes} lab=pair eim-apdf/eim-apdf loss=2% traffic_s={t['seconds']} "
               f"connections={total} verified_bytes={t['verified_bytes']}")
    out.append("CONNECTIONS " + " ".join(f"{k}={counts.get(k, 0)}" for k in kinds))
    modes = sorted({k.split(":")[0] for k in t["by_mode"]})
    for m in modes:
        parts = [f"{k}={t['by_mode'][m + ':' + k]}" for k in kinds if m + ":" + k in t["by_mode"]]
        out.append(f"  {m}: " + " ".join(parts))
    out.append(f"CORRUPTED_BYTES {t['corrupted_bytes']}")
    if t["corrupted_bytes"]:
        failures.append(f"{t['corrupted_bytes']} corrupted bytes")
    for bad in ("cut", "stalled", "corrupt", "connect-failed"):
        if counts.get(bad):
            failures.append(f"{counts[bad]} connection(s) {bad}")
    for k, v in t["examples"].items():
        for e in v[:5]:
            out.append(f"  example {k}: {e}")

    # Fault windows: from a fault's start to the next one's (or the end of the traffic).
    bounds = [f[1] for f in faults] + [end + 120]

    def window(ts):
        for i in range(len(faults)):
            if bounds[i] <= ts < bounds[i + 1]:
                return i
        return None

    lat = t["latencies"]

    def pct(values, p):
        v = sorted(values)
        return v[max(0, math.ceil(p / 100 * len(v)) - 1)] if v else float("nan")

    quiet = [ms for ts, ms in lat if not any(f[1] <= ts < f[1] + 60 for f in faults)]
    L = t["latency_ms"]
    out.append(f"LATENCY interactive echoes n={L['n']} p50_ms={L['p50']} p90_ms={L['p90']} p99_ms={L['p99']} max_ms={L['max']}; "
               f"outside the 60 s after each fault: n={len(quiet)} p50_ms={pct(quiet, 50):.2f} p99_ms={pct(quiet, 99):.2f} "
               f"max_ms={max(quiet) if quiet else float('nan'):.2f}")

    before = [u for u in t["unplanned"] if u[0] < (faults[0][1] if faults else end + 1e9)]
    if before:
        out.append(f"UNPLANNED before the first fault: " + ", ".join(f"{o} at {ts - t0:.0f}s" for ts, o in before))
    ports = sorted({p[0] for p in t["probes"]})
    names = {ports[0]: "direct", ports[-1]: "relay"} if ports else {}
    for i, (name, start, stop, note) in enumerate(faults):
        lo, hi = start, bounds[i + 1]
        parts = []
        for port in ports:
            probes = [p for p in t["probes"] if p[0] == port and p[2] >= lo and p[1] < hi]
            failed = [p for p in probes if not p[3]]
            if not failed:
                parts.append(f"{names[port]}=0.0s (no probe failed)")
                continue
            last_failed = max(p[1] for p in failed)
            later = [p for p in probes if p[3] and p[1] > last_failed]
            if not later:
                parts.append(f"{names[port]}=never ({len(failed)} probes failed)")
                failures.append(f"fault {i + 1} {name}: new connections on the {names[port]} forward did not work again")
                continue
            rec = min(p[2] for p in later) - start
            parts.append(f"{names[port]}={rec:.1f}s ({len(failed)} probes failed)")
            if rec > args.recovery_limit:
                failures.append(f"fault {i + 1} {name}: {names[port]} forward took {rec:.1f}s (limit {args.recovery_limit}s)")
        hit = {}
        for ts, o in t["unplanned"]:
            if window(ts) == i:
                hit[o] = hit.get(o, 0) + 1
        out.append(f"FAULT {i + 1} {name} at={start - t0:.0f}s took={stop - start:.1f}s ({note}); new connections work again after: "
                   + ", ".join(parts) + "; unplanned endings until the next fault: "
                   + (", ".join(f"{k}={v}" for k, v in sorted(hit.items())) or "none"))

    # RSS from minute 2 to the end of the traffic, and descriptors before and after it.
    samples = {}
    for line in open(os.path.join(d, "samples.txt")):
        sec, role, pid, rss, nfd = line.split()
        samples.setdefault(role, []).append((int(sec), int(pid), int(rss), int(nfd)))
    span = args.minutes * 60
    for role in ("expose", "listen-direct", "listen-relay", "server"):
        rows = samples.get(role, [])
        if role == "server" and rows:
            # Restarted by the faults: measured from minute 2 of its last run.
            last = rows[-1][1]
            first = min(r[0] for r in rows if r[1] == last)
            rows = [r for r in rows if r[1] == last and r[0] - first >= 120]
        else:
            # The state at minute 2: the last sample taken by then. The first fault comes at
            # minute 2 too, and a sample just after it finds the sessions it ended gone (their
            # buffers given back), a low start that is not what the agent held at minute 2.
            before = [r for r in rows if r[0] <= 120]
            rows = before[-1:] + [r for r in rows if r[0] > 120]
        rows = [r for r in rows if r[0] <= span]
        if len(rows) < 2:
            out.append(f"RSS {role}: too few samples")
            continue
        a, b = rows[0][2], rows[-1][2]
        growth = (b - a) * 100 / a
        peak = max(r[2] for r in rows)
        scope = "from minute 2 of its last run" if role == "server" else "from minute 2"
        out.append(f"RSS {role} {scope} ({rows[0][0]}s) {a} kB, at the end ({rows[-1][0]}s) {b} kB: {growth:+.1f}% (peak {peak} kB)")
        if role != "server" and growth > args.rss_growth_limit:
            failures.append(f"{role} RSS grew {growth:.1f}% (limit {args.rss_growth_limit}%)")
    # Descriptors by kind ("socket=3 pipe=1 anon_inode:[eventpoll]=4 ..."). Sockets (connections,
    # sessions, signaling) must all be closed again; other kinds may grow by a little, once: the
    # relay engine makes each worker's epoll set when that worker carries its first session.
    def kinds_of(name):
        rows = {}
        for line in open(os.path.join(d, name)):
            role, _, rest = line.strip().partition(" ")
            rows[role] = dict(kv.rsplit("=", 1) for kv in rest.split())
        return rows
    fb, fa = kinds_of("fds-before.txt"), kinds_of("fds-after.txt")
    peak_fds = {role: max((r[3] for r in rows), default=0) for role, rows in samples.items()}
    for role in ("expose", "listen-direct", "listen-relay"):
        b = {k: int(v) for k, v in fb.get(role, {}).items()}
        a = {k: int(v) for k, v in fa.get(role, {}).items()}
        tb, ta = sum(b.values()), sum(a.values())
        sb, sa = b.get("socket", 0), a.get("socket", 0)
        other = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if k != "socket" and a.get(k, 0) != b.get(k, 0)}
        grown = sum(v for v in other.values() if v > 0)
        note = ", ".join(f"{k} {v:+d}" for k, v in sorted(other.items())) or "none"
        out.append(f"FDS {role} before the traffic {tb} (sockets {sb}), peak {peak_fds.get(role, '?')}, after it {ta} "
                   f"(sockets {sa}; other kinds changed: {note})")
        if sa > sb:
            failures.append(f"{role} has {sa} sockets open after the traffic, {sb} before")
        if grown > 2:
            failures.append(f"{role} has {grown} more non-socket descriptors after the traffic ({note})")
    alive = open(os.path.join(d, "alive.txt")).read().strip()
    out.append(f"AGENTS {alive}")
    if "EXITED" in alive:
        failures.append("an agent exited: " + alive)
    for role in ("expose", "listen-direct", "listen-relay"):
        try:
            f = json.load(open(os.path.join(d, f"status-{role}.json")))["forwards"][0]
            out.append(f"STATUS {role} path={f['path']} sessions_up={f['sessions_up']} sessions_established={f['sessions_established']} "
                       f"setups_failed={f['setups_failed']} path_changes={f['path_changes']} connections={f['connections']} failed={f['failed']}")
        except Exception as e:
            out.append(f"STATUS {role}: unavailable ({type(e).__name__})")
    out.append("RESULT " + ("pass" if not failures else "FAIL: " + "; ".join(failures)))
    print("\n".join(out))
    return 1 if failures else 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "service":
        asyncio.run(serve(int(sys.argv[2])))
        return
    if len(sys.argv) >= 4 and sys.argv[1] == "ready":
        sys.exit(asyncio.run(ready([int(p) for p in sys.argv[2].split(",")], float(sys.argv[3]))))
    if len(sys.argv) >= 2 and sys.argv[1] == "report":
        p = argparse.ArgumentParser()
        p.add_argument("mode")
        p.add_argument("--dir", required=True)
        p.add_argument("--minutes", type=int, required=True)
        p.add_argument("--recovery-limit", type=float, default=60)
        p.add_argument("--rss-growth-limit", type=float, default=10)
        sys.exit(report(p.parse_args()))
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["clients"])
    p.add_argument("--ports", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--slots", type=int, default=100)
    p.add_argument("--interactive", type=int, default=10)
    p.add_argument("--rate", type=int, default=65536, help="bytes/s each bulk connection sends at most (0: no limit)")
    p.add_argument("--min-size", type=int, default=1024)
    p.add_argument("--max-size", type=int, default=2 * 1024 * 1024)
    args = p.parse_args()
    asyncio.run(clients(args))


if __name__ == "__main__":
    main()
