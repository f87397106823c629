#!/usr/bin/env python3
"""Hold every packet of one NFQUEUE queue for a fixed time, then accept it.

The NAT lab uses this on its internet router when the kernel has no sch_netem:
an iptables rule sends forwarded packets to the queue
(`iptables -A FORWARD -j NFQUEUE --queue-num N --queue-bypass`), and this
program gives each one its NF_ACCEPT verdict DELAY milliseconds after it
arrived. Python 3 standard library only: nfnetlink_queue spoken directly over
an AF_NETLINK socket.

usage: delay.py --delay-ms MS [--queue N] [--maxlen N] [--rcvbuf BYTES]

Design notes:
- The delay is the same for every packet, so arrival order is due order and a
  deque is enough; packets leave in the order they came.
- Verdicts go out as NFQNL_MSG_VERDICT_BATCH ("accept every packet up to id N").
  One message covers all packets due at once, and a packet whose notification
  was lost to ENOBUFS (we never learned its id) is still accepted with the next
  batch instead of sitting in the kernel's queue for ever.
- Fail-open: if the kernel's queue fills up, new packets are accepted at once
  rather than dropped. With --queue-bypass on the rule, packets also pass
  (undelayed) while nothing is bound to the queue.
- The loop sleeps in select() until the next packet is due or a message or
  signal arrives; it never spins.
- SIGTERM/SIGINT/SIGHUP: accept everything still held, unbind, exit 0.
"""
import argparse
import collections
import errno
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12

# netlink
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid
NFGENMSG = struct.Struct("!BBH")    # family, version, res_id (queue number, big-endian)
NLATTR = struct.Struct("=HH")       # len, type

# nfnetlink_queue (linux/netfilter/nfnetlink_queue.h)
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 0x1, 0x4
NF_ACCEPT = 1


def log(msg):
    print(f"delay: {msg}", file=sys.stderr, flush=True)


def attr(kind, payload):
    pad = (-len(payload)) % 4
    return NLATTR.pack(NLATTR.size + len(payload), kind) + payload + b"\0" * pad


def attrs(data, offset):
    """Yield (type, payload) of the attributes from offset to the end of data."""
    while offset + NLATTR.size <= len(data):
        length, kind = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size:
            return
        yield kind & NLA_TYPE_MASK, data[offset + NLATTR.size:offset + length]
        offset += (length + 3) & ~3


class Queue:
    def __init__(self, number, rcvbuf):
        self.number = number
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        # Room for bursts: messages that do not fit are lost (ENOBUFS). SO_RCVBUFFORCE lets root
        # go past net.core.rmem_max.
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                break
            except OSError:
                continue
        self.sock.bind((0, 0))
        self.early = []  # ids of packets that arrived while we were still configuring


    def message(self, msg_type, flags, payload):
        self.seq += 1
        body = NFGENMSG.pack(socket.AF_UNSPEC, 0, self.number) + payload
        header = NLMSGHDR.pack(NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                               NLM_F_REQUEST | flags, self.seq, 0)
        return header + body

    def configure(self, payload):
        """Send one config message and wait (at most 2 s) for its ack; returns 0 or an errno."""
        deadline = time.monotonic() + 2
        try:
            self.sock.settimeout(2)
            self.sock.send(self.message(NFQNL_MSG_CONFIG, NLM_F_ACK, payload))
            seq = self.seq
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return errno.ETIMEDOUT
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return errno.ETIMEDOUT
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        continue
                    raise
                for msg_type, msg_seq, body in split(data):
                    if msg_type == NLMSG_ERROR and msg_seq == seq:
                        return -struct.unpack_from("=i", body)[0]
                    if msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                        pid = packet_id(body)
                        if pid is not None:
                            self.early.append((time.monotonic(), pid))
        finally:
            self.sock.setblocking(False)

    def bind(self, maxlen):
        err = self.configure(attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        if err:
            raise OSError(err, f"cannot bind NFQUEUE {self.number}: {os.strerror(err)}"
                          + (" (already bound by another process?)" if err == errno.EBUSY else ""))
        # Metadata only: we never look at the payload.
        err = self.configure(attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        if err:
            raise OSError(err, f"cannot set copy mode: {os.strerror(err)}")
        err = self.configure(attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))
        if err:
            log(f"queue length {maxlen} refused ({os.strerror(err)}); kernel default kept")
        # Fail-open: a full queue lets packets through instead of dropping them. GSO: hand us large
        # segments whole (we only need their ids), which saves the kernel segmenting them.
        flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
        err = self.configure(attr(NFQA_CFG_FLAGS, struct.pack("!I", flags)) + attr(NFQA_CFG_MASK, struct.pack("!I", flags)))
        if err:
            log(f"fail-open/GSO flags refused ({os.strerror(err)}); a full queue drops packets")

    def accept_through(self, packet_id):
        """Accept every queued packet with an id up to packet_id (wrap-around safe in the kernel)."""
        payload = attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
        while True:
            try:
                self.sock.send(self.message(NFQNL_MSG_VERDICT_BATCH, 0, payload))
                return
            except InterruptedError:
                continue
            except BlockingIOError:
                # Netlink sends to the kernel do not block in practice; wait briefly if one does.
                select.select([], [self.sock], [], 0.01)

    def unbind(self):
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1)
            self.sock.send(self.message(NFQNL_MSG_CONFIG, 0,
                                        attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET))))
        except OSError:
            pass
        self.sock.close()


def split(data):
    """Yield (type, seq, body) for each netlink message in one datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, _flags, seq, _portid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            return
        yield msg_type, seq, data[offset + NLMSGHDR.size:offset + length]
        offset += (length + 3) & ~3


def packet_id(body):
    for kind, payload in attrs(body, NFGENMSG.size):
        if kind == NFQA_PACKET_HDR and len(payload) >= 4:
            return struct.unpack_from("!I", payload)[0]
    return None


def main():
    ap = argparse.ArgumentParser(description="Delay every packet of an NFQUEUE queue.")
    ap.add_argument("--delay-ms", type=float, required=True, help="how long to hold each packet")
    ap.add_argument("--queue", type=int, default=0, help="NFQUEUE queue number (default 0)")
    ap.add_argument("--maxlen", type=int, default=65536, help="kernel queue length (default 65536)")
    ap.add_argument("--rcvbuf", type=int, default=16 << 20, help="socket receive buffer (default 16 MiB)")
    args = ap.parse_args()
    delay = args.delay_ms / 1000.0

    # Signals only set a flag; the wake-up pipe makes the select below return at once.
    stop = []
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: stop.append(1))

    queue = Queue(args.queue, args.rcvbuf)
    try:
        queue.bind(args.maxlen)
    except OSError as e:
        log(str(e.strerror or e))
        return 1
    log(f"queue {args.queue} bound, holding each packet {args.delay_ms:g} ms")

    held = collections.deque((t + delay, pid) for t, pid in queue.early)  # (due, id), due times non-decreasing
    last_id = held[-1][1] if held else None  # newest id seen, for the final batch verdict
    packets = len(held)
    enobufs = errors = most_held = 0
    last_enobufs_log = 0.0
    buf = bytearray(65536)
    view = memoryview(buf)
    nl = queue.sock

    while not stop:
        now = time.monotonic()
        # Release everything that is due, with one verdict for the newest of them.
        due_id = None
        while held and held[0][0] <= now:
            due_id = held.popleft()[1]
        if due_id is not None:
            queue.accept_through(due_id)
        timeout = max(0.0, held[0][0] - now) if held else None
        try:
            readable, _, _ = select.select([nl, wake_r], [], [], timeout)
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                wake_r.recv(64)
            except OSError:
                pass
        if nl not in readable:
            continue
        # Drain what is waiting, but go back to releasing packets now and then.
        for _ in range(256):
            try:
                n = nl.recv_into(buf)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # Notifications were lost; their packets go out with the next batch verdict.
                    enobufs += 1
                    if time.monotonic() - last_enobufs_log > 1:
                        log(f"receive buffer overflowed ({enobufs} times so far); continuing")
                        last_enobufs_log = time.monotonic()
                    continue
                raise
            arrived = time.monotonic()
            for msg_type, _seq, body in split(view[:n]):
                if msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    pid = packet_id(body)
                    if pid is None:
                        continue
                    held.append((arrived + delay, pid))
                    last_id = pid
                    packets += 1
                elif msg_type == NLMSG_ERROR and struct.unpack_from("=i", body)[0] != 0:
                    errors += 1  # e.g. a verdict for an id the kernel no longer holds
            most_held = max(most_held, len(held))

    # Let everything still held go (unbinding would drop it), then leave.
    if last_id is not None:
        queue.accept_through(last_id)
    queue.unbind()
    log(f"stopped: packets={packets} most_held={most_held} enobufs={enobufs} verdict_errors={errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
