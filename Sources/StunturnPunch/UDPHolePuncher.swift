import StunturnSockets

/// Punches a UDP hole: both sides send probes to each other's public address until each has
/// seen a probe from the other and an acknowledgement of its own.
///
/// A probe is `STPU`, a kind byte (1 probe, 2 ack) and the tag. After `punch` returns, a late
/// probe from the peer may still arrive (its ack was lost): answer it with `answerProbe`.
public enum UDPHolePuncher {
    static let magic: [UInt8] = Array("STPU".utf8)
    static let probeKind: UInt8 = 1
    static let ackKind: UInt8 = 2

    /// Punches from `socket` to the peer's public address; returns the address the peer's
    /// datagrams come from.
    public static func punch(socket: Socket, peer: SocketAddress, tag: [UInt8] = defaultPunchTag,
                             options: PunchOptions = PunchOptions()) async throws -> SocketAddress {
        try await options.reporting("udp") { try await punchOnce(socket: socket, peer: peer, tag: tag, options: options) }
    }

    private static func punchOnce(socket: Socket, peer: SocketAddress, tag: [UInt8], options: PunchOptions) async throws -> SocketAddress {
        let deadline = ContinuousClock.now + options.timeout
        let probe = message(probeKind, tag)
        let ack = message(ackKind, tag)
        var target = peer
        var sawProbe = false
        var sawAck = false
        var sent = 0
        var lastError: (any Error)?
        var opening = options.openingTTL != nil
        while ContinuousClock.now < deadline {
            if opening, let ttl = options.openingTTL {
                // Short-lived probes open our NAT's mapping without alarming the peer's router.
                // They are an optimisation: when they fail, the full probes still punch.
                do {
                    let normal = try socket.hopLimit()
                    try socket.setHopLimit(ttl)
                    defer { try? socket.setHopLimit(normal) }
                    for _ in 0..<2 { _ = try probe.withUnsafeBytes { try socket.send($0, to: target) } }
                } catch let error as SocketError {
                    lastError = error
                }
            } else if sent < max(1, options.tries) {
                do {
                    try await socket.send(probe, to: target, until: deadline)
                } catch let error as SocketError {
                    lastError = error
                }
                sent += 1
            }
            let nextProbe = min(deadline, .now + (opening ? options.openingPause : options.probeInterval))
            opening = false
            while ContinuousClock.now < nextProbe {
                let datagram: [UInt8]
                let from: SocketAddress
                do {
                    (datagram, from) = try await socket.receive(maxLength: 512, until: nextProbe)
                } catch let error as SocketError where error.code == .timedOut {
                    break
                } catch let error as SocketError where error.code == .cancelled {
                    throw PunchError(.cancelled, peer: peer, transport: "udp", message: "cancelled")
                } catch let error as SocketError {
                    // An ICMP error from an earlier probe (port unreachable) fails one receive; the
                    // next datagram may still be the peer's. Pause so a failing socket cannot spin.
                    lastError = error
                    try await Task.sleep(for: .milliseconds(5))
                    continue
                }
                guard datagram.count == magic.count + 1 + tag.count, Array(datagram[0..<4]) == magic,
                      Array(datagram[5...]) == tag else {
                    options.onRejected?(from, "sent a datagram that is not the peer's probe")
                    continue
                }
                // A NAT may map the peer to another port than the one it reported: follow the packets.
                if from.addressBytes == peer.addressBytes { target = from }
                if datagram[4] == probeKind {
                    sawProbe = true
                    do {
                        try await socket.send(ack, to: from, until: deadline)
                    } catch let error as SocketError {
                        lastError = error
                    }
                } else if datagram[4] == ackKind {
                    sawAck = true
                }
                if sawProbe && sawAck {
                    // Extra acks make it unlikely that the peer misses the last one on a lossy path.
                    // Best effort: the path is proven both ways already.
                    for _ in 0..<2 { try? await socket.send(ack, to: target, until: deadline) }
                    return target
                }
            }
            if Task.isCancelled { throw PunchError(.cancelled, peer: peer, transport: "udp", message: "cancelled") }
        }
        let state = sawProbe ? "heard the peer but got no acknowledgement" : sawAck ? "acknowledged but never heard the peer" : "heard nothing from the peer"
        throw PunchError(.timedOut, peer: peer, transport: "udp",
                         message: "no two-way path within \(formatDuration(options.timeout)) after \(sent) probes: \(state) (last error: \(lastError.map { "\($0)" } ?? "no answer"))",
                         underlying: lastError)
    }

    /// True when `datagram` is a punch probe or ack; a probe carrying `tag` is answered with an ack.
    @discardableResult
    public static func answerProbe(_ datagram: [UInt8], from: SocketAddress, socket: Socket, tag: [UInt8] = defaultPunchTag) -> Bool {
        guard datagram.count >= 5, Array(datagram[0..<4]) == magic else { return false }
        if datagram[4] == probeKind, Array(datagram[5...]) == tag {
            // Best effort: the peer probes again if this ack is lost.
            _ = try? message(ackKind, tag).withUnsafeBytes { try socket.send($0, to: from) }
        }
        return true
    }

    static func message(_ kind: UInt8, _ tag: [UInt8]) -> [UInt8] { magic + [kind] + tag }
}
