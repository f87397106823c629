import Logging
import Stunturn
import StunturnSecure
import StunturnSockets

/// A UDP forward's datagrams over a relayed connection, where no UDP path could be punched: each
/// datagram is a 2-byte length and its bytes, inside the tunnel's records (as they are on a
/// plaintext forward). The stream keeps their boundaries; the relay may queue, never reorder.
enum RelayedDatagrams {
    /// Datagrams waiting for the relay connection; past this they are dropped, as a full UDP
    /// socket buffer would drop them.
    static let outboundQueue = 512

    /// A queue for datagrams headed into the relay, and its producer's end.
    static func makeOutbound() -> (AsyncStream<[UInt8]>, AsyncStream<[UInt8]>.Continuation) {
        AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingOldest(outboundQueue))
    }

    /// Carries `outbound` into the tunnel and the tunnel's datagrams to `deliver`, until the
    /// tunnel ends, the flow is idle for the forward's idle time-out, or the task is cancelled.
    /// Returns why it ended.
    @discardableResult
    static func run(_ tunnel: EstablishedTunnel, outbound: AsyncStream<[UInt8]>, context: ForwardContext,
                    activity: ActivityClock, deliver: @escaping @Sendable ([UInt8]) -> Void) async -> String {
        let idle = context.config.idleTimeout ?? TunnelDatagram.defaultIdleTimeout
        let socket = tunnel.socket
        let reason = await withTaskGroup(of: String.self) { group in
            group.addTask {
                // The writer: one task owns the sealer.
                let sealer = tunnel.secured?.sealer
                for await datagram in outbound {
                    var frame: [UInt8] = [UInt8(datagram.count >> 8), UInt8(datagram.count & 0xFF)]
                    frame += datagram
                    do {
                        var wire: [UInt8] = []
                        if let sealer { try sealer.seal(frame, appendingTo: &wire) } else { wire = frame }
                        try await socket.writeAll(wire, until: .now + .seconds(30))
                    } catch {
                        return "send failed: \(error)"
                    }
                }
                // No more datagrams: end in order, so the peer tells this from a cut.
                if let sealer, !Task.isCancelled {
                    var close: [UInt8] = []
                    try? sealer.sealClose(appendingTo: &close)
                    try? await socket.writeAll(close, until: .now + .seconds(5))
                }
                socket.shutdownWrite()
                return "ended by this side"
            }
            group.addTask {
                // The reader: one task owns the opener.
                let opener = tunnel.secured?.opener
                var plain: [UInt8] = []
                var start = 0
                while !Task.isCancelled {
                    let chunk: [UInt8]
                    do {
                        chunk = try await socket.readSome(maxLength: 1 << 16, until: activity.lastActivity + idle)
                    } catch let error as SocketError where error.code == .timedOut {
                        if ContinuousClock.now - activity.lastActivity < idle { continue }
                        return "idle for \(formatDuration(idle))"
                    } catch {
                        return "\(error)"
                    }
                    do {
                        if chunk.isEmpty {
                            try opener?.finish()
                            return "the peer closed it"
                        }
                        if let opener { try opener.open(chunk, appendingTo: &plain) } else { plain += chunk }
                    } catch {
                        return "broken: \(error)"
                    }
                    while plain.count - start >= 2 {
                        let length = Int(plain[start]) << 8 | Int(plain[start + 1])
                        guard plain.count - start - 2 >= length else { break }
                        let datagram = Array(plain[(start + 2)..<(start + 2 + length)])
                        start += 2 + length
                        activity.carried(in: datagram.count)
                        deliver(datagram)
                    }
                    if start > 0 {
                        plain.removeFirst(start)
                        start = 0
                    }
                }
                return "cancelled"
            }
            // Either end ends the flow.
            let first = await group.next() ?? "cancelled"
            group.cancelAll()
            return first
        }
        socket.close()
        return reason
    }
}
