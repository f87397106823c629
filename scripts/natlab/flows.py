# Clients for natlab.sh's idle and rebind checks. Each prints one line that starts with its
# outcome word, and every wait has a deadline.
import hashlib, os, socket, sys, threading, time


def udp_idle(port, idle, limit, warm):
    # One client socket, so one flow through the forward: an echo to warm it up, `idle` seconds
    # of silence, then the same socket asks again. A request is resent every 0.5 s (the first
    # one after the pause may be lost while the path is set up again); ok when its echo came back
    # within `limit` s; late answers are still timed, for the report, up to 30 s.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))

    def ask(tag, deadline):
        msg = b"idle-%s-" % tag + os.urandom(8).hex().encode()
        start = time.monotonic(); next_send = 0.0; sent = 0
        while time.monotonic() - start < deadline:
            now = time.monotonic()
            if now >= next_send:
                try:
                    s.sendto(msg, ("127.0.0.1", port)); sent += 1
                except OSError:
                    pass
                next_send = now + 0.5
            s.settimeout(max(0.01, min(0.1, next_send - time.monotonic())))
            try:
                d, _ = s.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            if d == msg:
                return time.monotonic() - start, sent
        return None, sent

    first, _ = ask(b"warm", warm)
    if first is None:
        print(f"failed warm-up: no echo within {warm}s"); return
    time.sleep(idle)
    took, sent = ask(b"after", 30)
    if took is None:
        print(f"none idle={idle} echo_s=- sent={sent} (no echo within 30 s)")
    else:
        print(f"{'ok' if took <= limit else 'late'} idle={idle} echo_s={took:.3f} sent={sent}")


def tcp_echo_once(port, size, limit):
    # A new connection; seconds until `size` random bytes came back intact, or None and why.
    data = os.urandom(size); start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=limit) as c:
            c.sendall(data)
            got = b""
            while len(got) < size:
                left = limit - (time.monotonic() - start)
                if left <= 0:
                    return None, f"timeout received={len(got)}"
                c.settimeout(left)
                d = c.recv(65536)
                if not d:
                    return None, f"eof received={len(got)}"
                got += d
            if got != data:
                return None, "mismatch"
    except socket.timeout:
        return None, "timeout"
    except OSError as e:
        return None, type(e).__name__
    return time.monotonic() - start, "ok"


def tcp_idle(port, idle, limit, warm):
    # A first connection shows the forward works; after `idle` s of silence a new one must echo
    # within `limit` s (timed up to 30 s for the report).
    start = time.monotonic(); took = None
    while time.monotonic() - start < warm:
        took, why = tcp_echo_once(port, 1024, 5)
        if took is not None:
            break
        time.sleep(0.5)
    if took is None:
        print(f"failed warm-up: no echo within {warm}s"); return
    time.sleep(idle)
    took, why = tcp_echo_once(port, 1024, 30)
    if took is None:
        print(f"none idle={idle} echo_s=- ({why})")
    else:
        print(f"{'ok' if took <= limit else 'late'} idle={idle} echo_s={took:.3f}")


def tcp_hold(port, seconds, rate, marker):
    # One connection held open `seconds` s, sending `rate` bytes/s of random data and checking
    # every echoed byte against what was sent. Writes the wall clock to `marker` once data flows.
    # ok: everything echoed and checked, then closed in order. reset: the connection was reset
    # (ECONNRESET/EPIPE), every byte before that intact. cut: it ended (EOF) or stalled before
    # all data came back, without a reset: a silent truncation. corrupt: a byte differed.
    sent = bytearray(); got = 0; state = {"error": None, "done": False}
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.settimeout(None)

    def send():
        chunk = max(1, rate // 20); end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                d = os.urandom(chunk)
                sent.extend(d)
                c.sendall(d)
                time.sleep(0.05)
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            state["error"] = e
        state["done"] = True

    threading.Thread(target=send, daemon=True).start()
    h_got = hashlib.sha256(); marked = False; last = time.monotonic(); outcome = None; why = ""
    c.settimeout(0.5)
    while True:
        try:
            d = c.recv(65536)
        except socket.timeout:
            if time.monotonic() - last > 30:
                outcome, why = "cut", "no echo for 30 s"
                break
            continue
        except (ConnectionResetError, BrokenPipeError) as e:
            outcome, why = "reset", type(e).__name__
            break
        except OSError as e:
            outcome, why = "reset", type(e).__name__
            break
        if not d:
            break
        last = time.monotonic()
        if bytes(sent[got:got + len(d)]) != d:
            outcome, why = "corrupt", f"at byte {got}"
            break
        h_got.update(d); got += len(d)
        if not marked and got > 0:
            with open(marker, "w") as f:
                f.write(f"{time.time():.3f}\n")
            marked = True
    c.close()
    if outcome is None:
        if state["done"] and state["error"] is None and got == len(sent):
            ok = h_got.hexdigest() == hashlib.sha256(bytes(sent)).hexdigest()
            outcome, why = ("ok", "checksum matches") if ok else ("corrupt", "checksum differs")
        elif state["error"] is not None:
            outcome, why = "reset", f"send: {type(state['error']).__name__}"
        else:
            outcome, why = "cut", "eof before every byte came back"
    print(f"{outcome} sent={len(sent)} echoed={got} at={time.time():.3f} ({why})")


def tcp_recover(port, since, limit):
    # From the wall clock `since`: a new small connection every 0.25 s (each may take 2 s) until
    # one echoes; seconds from `since` to that echo.
    while time.time() - since < limit:
        took, why = tcp_echo_once(port, 64, 2)
        if took is not None:
            print(f"ok recovered_s={time.time() - since:.2f}"); return
        time.sleep(0.25)
    print(f"none recovered_s=- (no new connection worked within {limit}s)")


def arg(a):
    for kind in (int, float):
        try:
            return kind(a)
        except ValueError:
            pass
    return a


cmd = sys.argv[1]; args = [arg(a) for a in sys.argv[2:]]
{"udp-idle": udp_idle, "tcp-idle": tcp_idle, "tcp-hold": tcp_hold, "tcp-recover": tcp_recover}[cmd](*args)
