import Dispatch
import Crypto
import Logging
import StunturnRelay
import StunturnSignaling
import StunturnSockets
import Synchronization

/// The signaling server: pairs initiators with receivers by access key over TCP, and answers
/// STUN (and the original protocol's plain-text address discovery) over UDP on the same port number.
///
/// Every piece of state lives on one serial queue (`ServerCore`); sockets are non-blocking and
/// driven by DispatchSources, so a waiting initiator costs one socket and a small record, not a thread.
public final class RendezvousServer: Sendable {
    public struct Options: Sendable {
        /// How long an initiator waits for a receiver; the original protocol's 30 s.
        public var initiatorTimeout: Duration = .seconds(30)
        /// A client that has not sent its hello by then is closed, so idle sockets cannot pile up.
        public var helloTimeout: Duration = .seconds(5)
        /// A hello is a few short strings; anything larger is hostile or broken.
        public var maxHelloBytes = 4096
        /// Bounds memory under a flood of initiators (each costs one socket and ~1 KiB).
        public var maxWaitingInitiators = 100_000
        /// Initiators queued on one key and target, and receivers long-polling on one key: several
        /// clients reaching one service is a handful, and a bound keeps every per-key operation
        /// cheap whatever a hostile client does.
        public var maxWaitingPerKey = 1000
        /// Upper bound for a receiver's long-poll, whatever it asks for.
        public var maxLongPoll: Duration = .seconds(60)
        /// Bounds descriptors; connections past it are closed at once.
        public var maxConnections = 120_000
        /// Whether TCP pairings may be relayed through this server when the peers ask for it.
        public var relay = true
        /// Relayed sessions at once, those granted and not yet joined included.
        public var relayMaxSessions = 1000
        /// Relayed sessions at once per key.
        public var relayMaxPerKey = 8
        /// Relayed sessions at once with a side at one IP address, so one host cannot take the
        /// whole relay by pairing with itself under many keys.
        public var relayMaxPerAddress = 32
        /// Bytes per second each direction of one relayed session may carry; nil for no limit.
        public var relayRate: Int? = 12_500_000
        /// How long the first side of a granted relay waits for the other.
        public var relayWait: Duration = .seconds(10)
        /// A relayed session with no byte either way for this long is ended (agents ping every 15 s).
        public var relayIdleTimeout: Duration = .seconds(600)
        /// The operator's tokens: with them, only clients presenting one are relayed.
        public var authTokens: AuthTokens?
        /// Pair only clients presenting a valid token (needs `authTokens`).
        public var requireAuth = false
        public init() {}
    }

    /// Counters for logs and tests.
    public struct Statistics: Sendable, Equatable {
        public var accepted = 0
        public var paired = 0
        public var rejected = 0
        public var stunResponses = 0
        public var waitingInitiators = 0
        /// Receivers long-polling for an initiator.
        public var waitingReceivers = 0
        public var openConnections = 0
        /// Relayed sessions joined since the start, and now.
        public var relayedSessions = 0
        public var activeRelays = 0
        /// Relays granted on pairings, not yet joined.
        public var pendingRelays = 0
        /// Bytes carried by relayed sessions that have ended, both directions.
        public var relayedBytes: UInt64 = 0
        /// Pairings whose peers asked for a relay and were refused one, and relay connections refused.
        public var relayRefused = 0
        /// Pairings per second over the last minute (or since the start, when shorter).
        public var pairingsPerSecond = 0.0
        /// How long the server has run.
        public var uptime: Duration = .zero
    }

    public let options: Options
    private let requestedAddress: SocketAddress
    private let logger: Logger
    private let core: QueueBound<ServerCore>
    /// Set once `start()` has bound the sockets.
    private let bound = Mutex<SocketAddress?>(nil)

    public init(listen address: SocketAddress, options: Options = Options(), logger: Logger = Logger(label: "stunturn.server")) {
        self.requestedAddress = address
        self.options = options
        self.logger = logger
        let queue = DispatchQueue(label: "stunturn.rendezvous")
        self.core = QueueBound(ServerCore(options: options, logger: logger, queue: queue), on: queue)
    }

    /// The bound TCP (and UDP) address once `start()` has returned; the requested one before.
    public var boundAddress: SocketAddress { bound.withLock { $0 } ?? requestedAddress }

    /// The counters as of now, read on the server's queue.
    public var statistics: Statistics {
        get async {
            await withCheckedContinuation { continuation in
                core.async { continuation.resume(returning: $0.statistics) }
            }
        }
    }

    /// Binds TCP and UDP on the same port (port 0 picks one free for both) and starts serving.
    /// Connections that arrive before the server's queue has taken the sockets wait in the backlog.
    public func start() throws {
        var lastError: Error?
        for _ in 0..<20 {
            do {
                let tcp = try Socket(.stream, family: requestedAddress.family)
                try tcp.setOption(SOL_SOCKET_VALUE, SO_REUSEADDR_VALUE, 1)
                if requestedAddress.family == .ipv6 { try tcp.setIPv6Only(false) }
                try tcp.bind(to: requestedAddress)
                try tcp.listen(backlog: 4096)
                let address = try tcp.localAddress()
                let udp = try Socket(.datagram, family: requestedAddress.family)
                if requestedAddress.family == .ipv6 { try udp.setIPv6Only(false) }
                do {
                    try udp.bind(to: requestedAddress.withPort(address.port))
                } catch let error as SocketError where requestedAddress.port == 0 {
                    lastError = error
                    continue // the UDP side of that port is taken; pick another
                }
                bound.withLock { $0 = address }
                core.async { $0.begin(tcp: tcp, udp: udp) }
                logger.info("signaling server listening", metadata: ["tcp": "\(address)", "stun": "udp \(address)"])
                return
            } catch {
                lastError = error
                if requestedAddress.port != 0 { throw error }
            }
        }
        throw lastError ?? SocketError(.failed, call: "listen", subject: "\(requestedAddress)", reason: "no free port")
    }

    /// Serves until `stop()` or task cancellation; starts the server first if `start()` was not called.
    public func run() async throws {
        if bound.withLock({ $0 }) == nil { try start() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                core.async { $0.whenStopped(continuation) }
            }
        } onCancel: {
            self.stop()
        }
    }

    /// Closes the listeners and every connection; waiting clients see their connection close.
    public func stop() {
        core.async { $0.stop() }
    }

    /// The reply to one UDP datagram: a Binding success for a STUN Binding request, nothing for
    /// other STUN messages, and the sender's `ip:port` as text for anything else (the original
    /// protocol's discovery).
    public static func stunResponse(to request: [UInt8], from sender: SocketAddress) -> [UInt8]? {
        ServerCore.stunResponse(to: request, from: sender)
    }
}

/// Everything the server does, on its queue.
final class ServerCore {
    let options: RendezvousServer.Options
    private let logger: Logger
    private let queue: DispatchQueue

    private var listener: Socket?
    private var acceptSource: DispatchSourceRead?
    private var acceptPaused = false
    private var stun: Socket?
    private var stunSource: DispatchSourceRead?
    private var sweepTimer: DispatchSourceTimer?
    /// Open client connections by descriptor, all watched through one readiness group.
    private var connections: [Int32: Connection] = [:]
    private var clients: ReadinessGroup?
    /// Initiators waiting, by key and target IP, oldest first.
    private var waitingInitiators: [PairingKey: [Connection]] = [:]
    private var waitingInitiatorCount = 0
    /// Receivers long-polling, by key, oldest first.
    private var waitingReceivers: [KeyBytes: [Connection]] = [:]
    private var stopped: [CheckedContinuation<Void, Never>] = []
    private var isStopped = false
    private var stats = RendezvousServer.Statistics()
    /// Relays granted on a pairing, by id, until both sides have joined or the wait ends.
    private var grants: [String: RelayGrant] = [:]
    /// Relays running, by id.
    private var relays: [String: (connection: RelayConnection, claim: RelayClaim)] = [:]
    /// Granted and running relays per key.
    private var relaysPerKey: [KeyBytes: Int] = [:]
    /// Relayed sessions, granted or running, per IP address of a side.
    private var relaysPerAddress: [[UInt8]: Int] = [:]
    private lazy var relayEngine = RelayEngine(workers: 2)
    private let startedAt = ContinuousClock.now
    /// The pairing count once a second over the last minute, for the rate `status` shows.
    private var pairingSamples: [(at: ContinuousClock.Instant, paired: Int)] = []

    init(options: RendezvousServer.Options, logger: Logger, queue: DispatchQueue) {
        self.options = options
        self.logger = logger
        self.queue = queue
    }

    var statistics: RendezvousServer.Statistics {
        var s = stats
        s.waitingInitiators = waitingInitiatorCount
        s.waitingReceivers = waitingReceivers.values.reduce(0) { $0 + $1.count }
        s.openConnections = connections.count
        s.activeRelays = relays.count
        s.pendingRelays = grants.count
        let now = ContinuousClock.now
        s.uptime = now - startedAt
        if let oldest = pairingSamples.first {
            let span = now - oldest.at
            let seconds = Double(span.components.seconds) + Double(span.components.attoseconds) * 1e-18
            if seconds > 0.5 { s.pairingsPerSecond = Double(stats.paired - oldest.paired) / seconds }
        }
        return s
    }

    func whenStopped(_ continuation: CheckedContinuation<Void, Never>) {
        if isStopped { continuation.resume() } else { stopped.append(continuation) }
    }

    func stop() {
        guard !isStopped else { return }
        isStopped = true
        acceptSource?.cancel()
        if acceptPaused { acceptSource?.resume() }  // a suspended source must be resumed before release
        acceptPaused = false
        stunSource?.cancel()
        sweepTimer?.cancel()
        for connection in connections.values { close(connection) }
        connections.removeAll()
        grants.removeAll()
        for relay in relays.values { relay.connection.close(reason: "server stopping") }
        clients?.cancel()
        waitingInitiators.removeAll()
        waitingReceivers.removeAll()
        waitingInitiatorCount = 0
        for continuation in stopped { continuation.resume() }
        stopped = []
    }

    // MARK: set-up (on queue)

    func begin(tcp: Socket, udp: Socket) {
        guard !isStopped else {
            tcp.close()
            udp.close()
            return
        }
        listener = tcp
        stun = udp
        clients = ReadinessGroup(queue: queue) { [unowned self] fd in
            // A descriptor closed earlier in the same batch is simply no longer here.
            if let connection = self.connections[fd] { self.readable(connection) }
        }
        let accept = DispatchSource.makeReadSource(fileDescriptor: tcp.fd, queue: queue)
        accept.setEventHandler { [unowned self] in self.acceptPending() }
        accept.setCancelHandler { tcp.close() }
        accept.resume()
        acceptSource = accept

        let stunSource = DispatchSource.makeReadSource(fileDescriptor: udp.fd, queue: queue)
        stunSource.setEventHandler { [unowned self] in self.answerDatagrams() }
        stunSource.setCancelHandler { udp.close() }
        stunSource.resume()
        self.stunSource = stunSource

        // One coarse timer enforces every deadline: cheaper than a timer per connection.
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100), leeway: .milliseconds(20))
        timer.setEventHandler { [unowned self] in self.sweepDeadlines() }
        timer.resume()
        sweepTimer = timer
    }

    private func acceptPending() {
        guard let listener else { return }
        // Bounded so one flood cannot starve the other sources on this queue.
        for _ in 0..<512 {
            let accepted: (Socket, SocketAddress)?
            do {
                accepted = try listener.accept()
            } catch let error as SocketError {
                logger.warning("accept failed", metadata: ["error": "\(error)"])
                if error.errno == EMFILE_VALUE || error.errno == ENFILE_VALUE, !acceptPaused, let source = acceptSource {
                    // Out of descriptors: pause accepting briefly instead of spinning on the error.
                    source.suspend()
                    acceptPaused = true
                    let resume = DispatchSource.makeTimerSource(queue: queue)
                    resume.schedule(deadline: .now() + .milliseconds(100))
                    resume.setEventHandler { [weak self] in
                        // stop() resumes the source itself if it comes first.
                        if let self, self.acceptPaused { self.acceptPaused = false; source.resume() }
                        resume.cancel()
                    }
                    resume.resume()
                }
                return
            } catch {
                return
            }
            guard let (socket, peer) = accepted else { return }
            stats.accepted += 1
            if connections.count >= options.maxConnections {
                stats.rejected += 1
                socket.close()
                continue
            }
            let connection = Connection(socket: socket, peer: peer, deadline: .now + options.helloTimeout)
            connections[connection.fd] = connection
            // Clients send their hello right after connecting, so it has usually arrived by now:
            // a receiver is then answered without ever being watched.
            readable(connection)
            guard connection.isOpen else { continue }
            do {
                try clients?.watch(connection.fd)
                connection.isWatched = true
            } catch {
                logger.warning("cannot watch a client connection", metadata: ["peer": "\(peer)", "error": "\(error)"])
                close(connection)
            }
        }
    }

    // MARK: per connection (on queue)

    private static let scratchSize = 4096
    private var scratch = [UInt8](repeating: 0, count: ServerCore.scratchSize)

    private func readable(_ connection: Connection) {
        guard connection.isOpen else { return }
        var received = 0
        var sawEOF = false
        // Bounded per event, so one client cannot keep this queue busy.
        for _ in 0..<16 {
            let result: ReadResult
            do {
                result = try scratch.withUnsafeMutableBytes { try connection.socket.read(into: $0) }
            } catch {
                sawEOF = true
                break
            }
            switch result {
            case .bytes(let n):
                received += n
                if connection.state == .readingHello { connection.buffer += scratch[0..<n] }
                if connection.buffer.count > options.maxHelloBytes { break }
                continue
            case .endOfFile:
                sawEOF = true
            case .wouldBlock:
                break
            }
            break
        }
        switch connection.state {
        case .readingHello:
            if connection.buffer.count > options.maxHelloBytes {
                reject(connection, ServerErrorText.helloTooLarge + " (limit \(options.maxHelloBytes) bytes)")
                return
            }
            switch JSONObjectScanner.scan(connection.buffer) {
            case .complete(let end):
                handleHello(Array(connection.buffer[0..<end]), on: connection)
            case .invalid:
                reject(connection, "Malformed hello: expected one JSON object")
            case .incomplete:
                if sawEOF { drop(connection, reason: "closed before sending a complete hello") }
            }
        case .waitingAsInitiator, .waitingAsReceiver, .waitingForRelay:
            // A waiting client only ever closes; a little trailing whitespace is tolerated, a
            // client that keeps sending is dropped.
            connection.ignoredBytes += received
            if sawEOF {
                drop(connection, reason: "left while waiting")
            } else if connection.ignoredBytes > 64 {
                drop(connection, reason: "sent data while waiting")
            }
        case .done:
            break
        }
    }

    private func handleHello(_ bytes: [UInt8], on connection: Connection) {
        var hello: ClientHello
        do {
            hello = try ClientHello.decode(bytes)
        } catch {
            reject(connection, "Malformed hello: \(error)")
            return
        }
        guard !hello.key.isEmpty else {
            reject(connection, ServerErrorText.missingKey)
            return
        }
        // The receiver's IP is compared as the server formats it: 2001:DB8::1 and 2001:db8:0::1
        // name the same receiver.
        // (A dotted-quad IPv4 address that parses is already in that form.)
        if hello.targetIP.utf8.contains(UInt8(ascii: ":")), let target = SocketAddress(ip: hello.targetIP, port: 0) {
            hello.targetIP = target.ip
        }
        connection.hello = hello
        connection.buffer = []
        let authorized = options.authTokens?.accepts(hello.token) ?? false
        connection.mayRelay = options.relay && (options.authTokens == nil || authorized)
        if options.requireAuth && !authorized {
            reject(connection, ServerErrorText.authRequired)
            return
        }
        if hello.transport == ClientHello.relayTransport {
            arriveRelay(connection, hello)
            return
        }
        switch hello.effectiveRole {
        case .initiator: arriveInitiator(connection, hello)
        case .receiver: arriveReceiver(connection, hello)
        }
    }

    private func arriveInitiator(_ connection: Connection, _ hello: ClientHello) {
        // A receiver already long-polling on this key takes the initiator at once.
        let keyBytes = KeyBytes(hello.key)
        if let receiver = waitingReceivers.removeFirst(under: keyBytes, where: { connection.canPair(withReceiver: $0) }) {
            pair(initiator: connection, receiver: receiver)
            return
        }
        let key = PairingKey(key: keyBytes, targetIP: hello.targetIP)
        let queueForKey = waitingInitiators[key, default: []]
        // Original clients (no role field) get the original exclusivity; ours may queue.
        if hello.role == nil && !queueForKey.isEmpty {
            reject(connection, ServerErrorText.keyInUse)
            return
        }
        guard queueForKey.count < options.maxWaitingPerKey else {
            reject(connection, ServerErrorText.tooManyWaiting)
            return
        }
        guard waitingInitiatorCount < options.maxWaitingInitiators else {
            logger.warning("initiator refused: waiting limit reached", metadata: ["limit": "\(options.maxWaitingInitiators)"])
            reject(connection, ServerErrorText.tooManyWaiting)
            return
        }
        waitingInitiators[key, default: []].append(connection)
        waitingInitiatorCount += 1
        connection.state = .waitingAsInitiator(key)
        connection.deadline = .now + options.initiatorTimeout
        logger.debug("initiator waiting", metadata: ["peer": "\(connection.peer)", "protocol": "\(hello.transport)"])
    }

    private func arriveReceiver(_ connection: Connection, _ hello: ClientHello) {
        let keyBytes = KeyBytes(hello.key)
        for key in [PairingKey(key: keyBytes, targetIP: connection.peerIP), PairingKey(key: keyBytes, targetIP: "")] {
            if let initiator = popInitiator(key, for: connection) {
                pair(initiator: initiator, receiver: connection)
                return
            }
        }
        if let wait = hello.wait, wait > 0 {
            guard waitingReceivers[keyBytes, default: []].count < options.maxWaitingPerKey else {
                reject(connection, ServerErrorText.tooManyReceivers)
                return
            }
            let requested = Duration.seconds(wait)
            connection.state = .waitingAsReceiver(keyBytes)
            connection.deadline = .now + min(requested, options.maxLongPoll)
            waitingReceivers[keyBytes, default: []].append(connection)
            return
        }
        reply(connection, .failure(ServerErrorText.noInitiator))
    }

    /// The oldest initiator under `key` that `receiver` can serve, taken off its list.
    private func popInitiator(_ key: PairingKey, for receiver: Connection) -> Connection? {
        guard let initiator = waitingInitiators.removeFirst(under: key, where: { $0.canPair(withReceiver: receiver) }) else { return nil }
        waitingInitiatorCount -= 1
        return initiator
    }

    private func pair(initiator: Connection, receiver: Connection) {
        guard let ih = initiator.hello, let rh = receiver.hello else { return }
        let udp = ih.transport == "udp"
        let initiatorSees = udp ? rh.address : receiver.peer.description
        let receiverSees = udp ? ih.address : initiator.peer.description
        stats.paired += 1
        logger.info("paired", metadata: ["initiator": "\(initiator.peer)", "receiver": "\(receiver.peer)", "protocol": "\(ih.transport)",
                                         "key": "\(KeyBytes.tag(ih.key))"])
        var toInitiator = ServerReply(transport: ih.transport, peerAddress: initiatorSees, peerRelay: rh.relay,
                                      peerCandidates: udp ? nil : rh.candidates)
        var toReceiver = ServerReply(transport: ih.transport, peerAddress: receiverSees, peerRelay: ih.relay,
                                     peerCandidates: udp ? nil : ih.candidates)
        // A side that said "never" (a direct-only attempt, such as an agent trying to move a
        // relayed session to a direct path) is not refused anything: it asked for nothing.
        if Self.wantsRelay(ih) || Self.wantsRelay(rh), ih.relay != "never", rh.relay != "never" {
            switch grantRelay(initiator: initiator, receiver: receiver) {
            case .success(let id):
                toInitiator.relayID = id
                toReceiver.relayID = id
            case .failure(let refusal):
                stats.relayRefused += 1
                logger.debug("relay refused", metadata: ["initiator": "\(initiator.peer)", "reason": "\(refusal.reason)"])
                toInitiator.relayRefused = refusal.reason
                toReceiver.relayRefused = refusal.reason
            }
        }
        reply(initiator, toInitiator)
        reply(receiver, toReceiver)
    }

    // MARK: relay (on queue)

    struct RelayRefusal: Error { let reason: String }

    /// A client that may use the relay: it said so, with `auto` or `only`.
    private static func wantsRelay(_ hello: ClientHello) -> Bool {
        hello.relay == "auto" || hello.relay == "only"
    }

    /// Grants a relay to a pairing both of whose sides want one and may have one, within the limits.
    private func grantRelay(initiator: Connection, receiver: Connection) -> Result<String, RelayRefusal> {
        guard options.relay else { return .failure(RelayRefusal(reason: "this server does not relay")) }
        guard let ih = initiator.hello, let rh = receiver.hello, Self.wantsRelay(ih), Self.wantsRelay(rh) else {
            return .failure(RelayRefusal(reason: "the peer does not use relays"))
        }
        guard initiator.mayRelay && receiver.mayRelay else {
            let who = initiator.mayRelay ? "the receiver" : receiver.mayRelay ? "the initiator" : "either side"
            return .failure(RelayRefusal(reason: "this server relays only for clients with a valid token, and \(who) has none"))
        }
        guard relays.count + grants.count < options.relayMaxSessions else {
            logger.warning("relay refused: session limit reached", metadata: ["limit": "\(options.relayMaxSessions)"])
            return .failure(RelayRefusal(reason: "the server's relay is full (\(options.relayMaxSessions) sessions)"))
        }
        let key = KeyBytes(ih.key)
        guard relaysPerKey[key, default: 0] < options.relayMaxPerKey else {
            return .failure(RelayRefusal(reason: "this key already has \(options.relayMaxPerKey) relayed sessions, the server's limit"))
        }
        let claim = RelayClaim(key: key, addresses: Set([RelayClaim.host(initiator.peer), RelayClaim.host(receiver.peer)]))
        for (address, side) in [(initiator.peer, "the initiator"), (receiver.peer, "the receiver")]
        where relaysPerAddress[RelayClaim.host(address), default: 0] >= options.relayMaxPerAddress {
            // A client can ask again and again: not worth more than a debug line each time.
            logger.debug("relay refused: address limit reached", metadata: ["address": "\(address.ip)", "limit": "\(options.relayMaxPerAddress)"])
            return .failure(RelayRefusal(
                reason: "\(side)'s address \(address.ip) already has \(options.relayMaxPerAddress) relayed sessions, the server's limit"))
        }
        var id = ""
        repeat { id = Self.newRelayID() } while grants[id] != nil || relays[id] != nil
        grants[id] = RelayGrant(claim: claim, expires: .now + options.relayWait)
        relaysPerKey[key, default: 0] += 1
        for address in claim.addresses { relaysPerAddress[address, default: 0] += 1 }
        return .success(id)
    }

    private static func newRelayID() -> String {
        var generator = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for _ in 0..<16 {
            let byte = UInt8.random(in: 0...255, using: &generator)
            out += [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A relay connection: joins the granted pairing's other side, or waits for it.
    private func arriveRelay(_ connection: Connection, _ hello: ClientHello) {
        guard let id = hello.relayID, let grant = grants[id], grant.claim.key == KeyBytes(hello.key), let role = hello.role else {
            stats.relayRefused += 1
            reject(connection, ServerErrorText.relayUnknown)
            return
        }
        guard let waiting = grant.waiting else {
            grant.waiting = connection
            grant.waitingRole = role
            connection.state = .waitingForRelay(id)
            connection.deadline = grant.expires
            return
        }
        guard grant.waitingRole != role else {
            stats.relayRefused += 1
            reject(connection, ServerErrorText.relaySideTaken)
            return
        }
        grants[id] = nil
        join(id, waiting, connection, claim: grant.claim)
    }

    /// Tells both sides where the other is, takes their sockets out of the signaling server and
    /// splices them in the relay engine: from now on each side's bytes reach the other, unread.
    private func join(_ id: String, _ first: Connection, _ second: Connection, claim: RelayClaim) {
        var sockets: [Socket] = []
        for (connection, other) in [(first, second), (second, first)] {
            let bytes = ServerReply(transport: ClientHello.relayTransport, peerAddress: other.peer.description).encoded()
            let sent = try? bytes.withUnsafeBytes { try connection.socket.write($0) }
            connection.state = .done
            connections[connection.fd] = nil
            connection.isOpen = false
            let raw = connection.socket.detach()
            let fd = connection.isWatched ? (clients?.release(raw) ?? raw) : raw
            sockets.append(Socket(adopting: fd, kind: .stream, family: connection.peer.family))
            if sent != bytes.count {
                // A reply that does not fit an empty socket buffer: the client is not what it claims.
                for socket in sockets { socket.close() }
                if sockets.count == 1 { close(other) }
                relayEnded(claim)
                return
            }
        }
        stats.relayedSessions += 1
        logger.info("relaying a session", metadata: ["relay": "\(id.prefix(8))", "a": "\(first.peer)", "b": "\(second.peer)"])
        let core = QueueBound(self, on: queue), logger = self.logger
        let relay = relayEngine.relay(RelayEndpoint(socket: sockets[0], name: "relay side \(first.peer)"),
                                      RelayEndpoint(socket: sockets[1], name: "relay side \(second.peer)"),
                                      idleTimeout: options.relayIdleTimeout, rateLimit: options.relayRate) { report in
            logger.info("relayed session ended: \(report.reason)", metadata: [
                "relay": "\(id.prefix(8))", "bytes": "\(report.bytesAToB + report.bytesBToA)"])
            core.async { $0.relayFinished(id, bytes: report.bytesAToB + report.bytesBToA) }
        }
        relays[id] = (relay, claim)
        if isStopped { relay.close(reason: "server stopping") }
    }

    private func relayFinished(_ id: String, bytes: UInt64) {
        stats.relayedBytes += bytes
        guard let relay = relays.removeValue(forKey: id) else { return }
        relayEnded(relay.claim)
    }

    /// A granted or running relay is over: its key's and addresses' counts go down.
    private func relayEnded(_ claim: RelayClaim) {
        if let count = relaysPerKey[claim.key] { relaysPerKey[claim.key] = count > 1 ? count - 1 : nil }
        for address in claim.addresses {
            if let count = relaysPerAddress[address] { relaysPerAddress[address] = count > 1 ? count - 1 : nil }
        }
    }

    /// Ends grants nobody joined in time (a side that waits is answered by its own deadline).
    private func expireGrants(now: ContinuousClock.Instant) {
        for (id, grant) in grants where grant.expires <= now && grant.waiting == nil {
            grants[id] = nil
            relayEnded(grant.claim)
        }
    }

    private func reject(_ connection: Connection, _ message: String) {
        stats.rejected += 1
        logger.debug("client refused", metadata: ["peer": "\(connection.peer)", "reason": "\(message)"])
        reply(connection, .failure(message))
    }

    /// Sends the single reply and closes. Replies are tiny, so one non-blocking send nearly always
    /// takes it; a client whose buffer is full gets closed rather than buffered for.
    ///
    /// The reply goes out held back (MSG_MORE) and the close right after it attaches the FIN to
    /// that same segment, so the server's side always closes first, as the original server's
    /// nearly always does: TIME_WAIT then lands on the server's port, not on the client's, whose
    /// TCP punch binds that same port next.
    private func reply(_ connection: Connection, _ reply: ServerReply) {
        leaveWaitingLists(connection)
        connection.state = .done
        let bytes = reply.encoded()
        do {
            let sent = try bytes.withUnsafeBytes { try connection.socket.write($0, more: true) }
            if sent != bytes.count {
                logger.debug("reply cut short: the client's receive buffer is full",
                             metadata: ["peer": "\(connection.peer)", "sent": "\(sent ?? 0)", "of": "\(bytes.count)"])
            }
        } catch {
            logger.debug("reply not sent", metadata: ["peer": "\(connection.peer)", "error": "\(error)"])
        }
        close(connection)
    }

    private func drop(_ connection: Connection, reason: String) {
        logger.trace("connection closed", metadata: ["peer": "\(connection.peer)", "reason": "\(reason)"])
        close(connection)
    }

    /// Closes a connection and takes it off any waiting list, whatever state it was in.
    private func close(_ connection: Connection) {
        leaveWaitingLists(connection)
        connection.state = .done
        guard connection.isOpen else { return }
        connections[connection.fd] = nil
        connection.isOpen = false
        if connection.isWatched, let clients {
            clients.close(connection.socket.detach())
        } else {
            connection.socket.close()
        }
    }

    private func leaveWaitingLists(_ connection: Connection) {
        switch connection.state {
        case .waitingAsInitiator(let key):
            // Remove exactly this entry under its own key (the original deleted the wrong key).
            if waitingInitiators.removeFirst(under: key, where: { $0 === connection }) != nil {
                waitingInitiatorCount -= 1
            }
        case .waitingAsReceiver(let key):
            _ = waitingReceivers.removeFirst(under: key, where: { $0 === connection })
        case .waitingForRelay(let id):
            // The side that came first left or waited in vain: the grant is over.
            if let grant = grants.removeValue(forKey: id) { relayEnded(grant.claim) }
        case .readingHello, .done:
            break
        }
    }

    private func sweepDeadlines() {
        let now = ContinuousClock.now
        if pairingSamples.last.map({ now - $0.at >= .seconds(1) }) ?? true {
            pairingSamples.append((now, stats.paired))
            if let first = pairingSamples.first, now - first.at > .seconds(60) { pairingSamples.removeFirst() }
        }
        for connection in connections.values where connection.deadline <= now {
            switch connection.state {
            case .readingHello: reject(connection, ServerErrorText.helloTimedOut)
            case .waitingAsInitiator:
                logger.info("initiator waited \(formatDuration(options.initiatorTimeout)); no receiver with its key came", metadata: [
                    "initiator": "\(connection.peer)", "key": "\(KeyBytes.tag(connection.hello?.key ?? ""))"])
                reply(connection, .failure(ServerErrorText.initiatorTimedOut))
            case .waitingAsReceiver: reply(connection, .failure(ServerErrorText.noInitiator))
            case .waitingForRelay:
                stats.relayRefused += 1
                reply(connection, .failure(ServerErrorText.relayPeerMissing))
            case .done: close(connection)
            }
        }
        if !grants.isEmpty { expireGrants(now: now) }
    }

    // MARK: STUN (on queue)

    private var datagram = [UInt8](repeating: 0, count: 2048)

    private func answerDatagrams() {
        guard let stun else { return }
        for _ in 0..<256 {
            let received: (Int, SocketAddress)?
            do {
                received = try datagram.withUnsafeMutableBytes { try stun.receive(into: $0) }
            } catch {
                return
            }
            guard let (n, from) = received else { return }
            let request = Array(datagram[0..<n])
            let response = ServerCore.stunResponse(to: request, from: from)
            if let response {
                do {
                    // False when the socket buffer is full: the client retransmits its request.
                    if try response.withUnsafeBytes({ try stun.send($0, to: from) }) { stats.stunResponses += 1 }
                } catch {
                    logger.debug("STUN response not sent", metadata: ["to": "\(from)", "error": "\(error)"])
                }
            }
        }
    }

    static func stunResponse(to request: [UInt8], from sender: SocketAddress) -> [UInt8]? {
        if STUNMessage.looksLikeSTUN(request) {
            guard let message = try? STUNMessage.decode(request), message.messageType == .bindingRequest else { return nil }
            let response = STUNMessage.bindingSuccess(transactionID: message.transactionID, mapped: sender, software: "stunturn")
            return response.encode(fingerprint: true)
        }
        if let classic = classicBindingResponse(to: request, from: sender) { return classic }
        // Never answer what looks like another server's answer (an address as text, or empty):
        // a spoofed packet could otherwise start an endless exchange between two servers.
        guard !request.isEmpty, request.count <= 512,
              (try? SocketAddress(parsing: String(decoding: request, as: UTF8.self))) == nil else { return nil }
        return Array(sender.description.utf8)
    }
}

extension ServerCore {
    /// RFC 3489 clients send a Binding request without the magic cookie (a 16-byte transaction ID);
    /// they get a Binding response with MAPPED-ADDRESS, as classic STUN servers answer.
    static func classicBindingResponse(to request: [UInt8], from sender: SocketAddress) -> [UInt8]? {
        guard request.count >= STUNMessage.headerLength, request[0] == 0x00, request[1] == 0x01,
              Int(request[2]) << 8 | Int(request[3]) == request.count - STUNMessage.headerLength,
              (request.count - STUNMessage.headerLength) % 4 == 0 else { return nil }
        let mapped = STUNMessage.encodeAddress(sender, xor: false, transactionID: [])
        var out: [UInt8] = [0x01, 0x01, 0x00, UInt8(4 + mapped.count)]
        out += request[4..<20]
        out += [0x00, 0x01, 0x00, UInt8(mapped.count)] + mapped
        return out
    }
}

extension Dictionary where Value == [Connection] {
    /// Takes the oldest connection under `key` that matches off its list, in place (the list is
    /// not copied), and drops the key when its list empties.
    fileprivate mutating func removeFirst(under key: Key, where matches: (Connection) -> Bool) -> Connection? {
        guard let index = self[key]?.firstIndex(where: matches) else { return nil }
        let removed = self[key]!.remove(at: index)
        if self[key]!.isEmpty { self[key] = nil }
        return removed
    }
}

/// An access key as the bytes the client sent: two keys pair only when byte for byte equal, as in
/// the original (Swift's String equality would also match Unicode-equivalent spellings).
struct KeyBytes: Hashable {
    let key: String
    init(_ key: String) { self.key = key }

    /// A short one-way tag of a key, enough to tell pairings apart in a log without showing the
    /// key (our clients send a hash of the access key, but the original clients send their own).
    static func tag(_ key: String) -> String {
        SHA256.hash(data: Array(key.utf8)).prefix(4).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    static func == (a: KeyBytes, b: KeyBytes) -> Bool { a.key.utf8.elementsEqual(b.key.utf8) }

    func hash(into hasher: inout Hasher) {
        // The UTF-8 storage in one call (a native string is not copied to get it), then a
        // terminator, so that a key and the target IP after it in a PairingKey cannot trade bytes
        // ("ab" + "c" and "a" + "bc") and collide on purpose.
        var key = self.key
        key.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        hasher.combine(0xFF as UInt8)
    }
}

/// A relay granted on a pairing: the key it was granted for, and the side that has joined.
/// What a relay counts against the limits: its key and its sides' IP addresses (one, when both
/// sides are at the same address).
struct RelayClaim {
    let key: KeyBytes
    let addresses: Set<[UInt8]>

    /// What counts as one host: an IPv4 address, or an IPv6 /64 (a host usually holds a whole /64).
    static func host(_ address: SocketAddress) -> [UInt8] {
        let bytes = address.addressBytes
        return bytes.count == 16 ? Array(bytes.prefix(8)) : bytes
    }
}

private final class RelayGrant {
    let claim: RelayClaim
    let expires: ContinuousClock.Instant
    var waiting: Connection?
    var waitingRole: SignalRole?

    init(claim: RelayClaim, expires: ContinuousClock.Instant) {
        self.claim = claim
        self.expires = expires
    }
}

/// Initiators are matched on the key and the receiver IP they name (empty: key alone).
struct PairingKey: Hashable {
    let key: KeyBytes
    let targetIP: String
}

private final class Connection {
    enum State: Equatable {
        case readingHello
        case waitingAsInitiator(PairingKey)
        case waitingAsReceiver(KeyBytes)
        case waitingForRelay(String)
        case done
    }

    let socket: Socket
    let peer: SocketAddress
    var deadline: ContinuousClock.Instant
    var state: State = .readingHello
    var buffer: [UInt8] = []
    var ignoredBytes = 0
    var hello: ClientHello?
    /// Watched through the server's readiness group, which then closes the descriptor.
    var isWatched = false
    var isOpen = true
    /// Relays are open to this client (relay on, and its token valid where tokens are required).
    var mayRelay = false
    let fd: Int32

    init(socket: Socket, peer: SocketAddress, deadline: ContinuousClock.Instant) {
        self.socket = socket
        self.fd = socket.fd
        self.peer = peer
        self.deadline = deadline
    }

    /// The peer's IP as text, formatted once.
    lazy var peerIP: String = peer.ip

    /// Whether this initiator can be paired with `receiver`: the IP it names (if any) is the
    /// receiver's, and a UDP initiator needs the receiver's reported UDP address, its only way
    /// to reach it.
    func canPair(withReceiver receiver: Connection) -> Bool {
        guard let hello else { return false }
        if !hello.targetIP.isEmpty && receiver.peerIP != hello.targetIP { return false }
        if hello.transport == "udp" && (receiver.hello?.address.isEmpty ?? true) { return false }
        return true
    }
}
