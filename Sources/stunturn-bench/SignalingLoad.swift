import CStunturnSystem
import Glibc

/// An epoll-driven load generator for a signaling server: thousands of clients in one thread, no
/// allocation per event beyond a client's ~80-byte hello, so that on a small machine the server,
/// not the generator, is measured.
///
/// Speaks the original protocol (initiator names the receiver's IP, receiver names none), which
/// both stunturn's server and the Go original understand.
final class SignalingLoad {
    enum Role { case initiator, receiver }

    struct Client {
        var role: Role = .initiator
        var pair = 0
        var connecting = false
        var replyBytes = 0
        var replyIsError = false
        var inUse = false
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let address: sockaddr_in
    let epoll: Int32
    var clients: [Client]
    var readyFDs = [Int32](repeating: 0, count: 256)
    var buffer = [UInt8](repeating: 0, count: 4096)
    let keyPrefix: String
    /// Clients started and not yet ended.
    var open = 0
    var connectFailures = 0

    init(host: String, port: UInt16, maxDescriptors: Int) throws {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw Failure(description: "not an IPv4 address: \(host)") }
        address = addr
        epoll = stunturn_epoll_create()
        guard epoll >= 0 else { throw Failure(description: "epoll_create1: \(String(cString: strerror(errno)))") }
        clients = Array(repeating: Client(), count: maxDescriptors)
        keyPrefix = String(UInt64.random(in: 0..<UInt64.max), radix: 16)
    }

    deinit { Glibc.close(epoll) }

    static let readable: UInt32 = 1
    static let writable: UInt32 = 4

    func hello(_ role: Role, pair: Int) -> [UInt8] {
        switch role {
        case .initiator:
            return Array("{\"uuid\":\"\(keyPrefix)-\(pair)\",\"target_ip\":\"127.0.0.1\",\"protocol\":\"tcp\",\"address\":\"\"}\n".utf8)
        case .receiver:
            return Array("{\"uuid\":\"\(keyPrefix)-\(pair)\",\"target_ip\":\"\",\"protocol\":\"\",\"address\":\"\"}\n".utf8)
        }
    }

    /// Starts a client; false when the system refused a socket (counted, not fatal).
    @discardableResult
    func start(_ role: Role, pair: Int) -> Bool {
        let type: Int32 = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0, Int(fd) < clients.count else {
            if fd >= 0 { Glibc.close(fd) }
            connectFailures += 1
            return false
        }
        var addr = address
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 && errno != EINPROGRESS {
            Glibc.close(fd)
            connectFailures += 1
            return false
        }
        clients[Int(fd)] = Client(role: role, pair: pair, connecting: rc != 0, replyBytes: 0, replyIsError: false, inUse: true)
        if rc == 0 { sendHello(fd) }
        stunturn_epoll_control(epoll, 0, fd, rc == 0 ? SignalingLoad.readable : SignalingLoad.writable)
        open += 1
        return true
    }

    private func sendHello(_ fd: Int32) {
        let c = clients[Int(fd)]
        let bytes = hello(c.role, pair: c.pair)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Waits up to `timeoutMs` and handles what is ready; `finished` gets each client whose reply
    /// ended (server closed), with whether the reply carried an error.
    func poll(timeoutMs: Int32, finished: (Role, Int, _ gotReply: Bool, _ error: Bool) -> Void) {
        let n = readyFDs.withUnsafeMutableBufferPointer { stunturn_epoll_wait(epoll, $0.baseAddress, nil, Int32($0.count), timeoutMs) }
        guard n > 0 else { return }
        for i in 0..<Int(n) {
            let fd = readyFDs[i]
            let index = Int(fd)
            guard clients[index].inUse else { continue }
            if clients[index].connecting {
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                if err != 0 {
                    end(fd, finished: finished, gotReply: false)
                    continue
                }
                clients[index].connecting = false
                sendHello(fd)
                stunturn_epoll_control(epoll, 1, fd, SignalingLoad.readable)
                continue
            }
            while true {
                let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if got > 0 {
                    // Replies are one short JSON object; an error reply carries an "error" field.
                    if !clients[index].replyIsError && SignalingLoad.containsErrorField(buffer, count: got) {
                        clients[index].replyIsError = true
                    }
                    clients[index].replyBytes += got
                    continue
                }
                if got == 0 || (errno != EAGAIN && errno != EINTR) {
                    end(fd, finished: finished, gotReply: clients[index].replyBytes > 0)
                }
                break
            }
        }
    }

    private static let errorField = Array("\"error\"".utf8)

    static func containsErrorField(_ bytes: [UInt8], count: Int) -> Bool {
        let needle = errorField
        guard count >= needle.count else { return false }
        outer: for start in 0...(count - needle.count) {
            for j in 0..<needle.count where bytes[start + j] != needle[j] { continue outer }
            return true
        }
        return false
    }

    private func end(_ fd: Int32, finished: (Role, Int, Bool, Bool) -> Void, gotReply: Bool) {
        let c = clients[Int(fd)]
        clients[Int(fd)].inUse = false
        Glibc.close(fd) // also removes it from the epoll set
        open -= 1
        finished(c.role, c.pair, gotReply, c.replyIsError)
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
