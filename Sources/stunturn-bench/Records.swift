import ArgumentParser
import Crypto
import Glibc
import StunturnSecure

/// The tunnel's record layer alone, on one thread: what sealing and opening cost per byte, beside
/// a plain memory copy of the same chunks. The relay pays one seal (sending agent) and one open
/// (receiving agent) per byte on top of the copies any relay makes, so this is the least the
/// encryption adds to a relay pair's CPU time.
struct Records: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Seal and open tunnel records in memory and print CPU seconds per GB as one JSON object.",
        discussion: """
        Chunks of --chunk bytes (the relay's read size) are sealed into records and opened again, \
        as the two agents of a tunnel do, until --megabytes have passed. Times are this thread's \
        CPU time. `copy` is memcpy of the same chunks, for scale: a relay's read and write each \
        copy every byte once in the kernel.
        """
    )

    @Option(help: "Plaintext to push through, in MB.") var megabytes = 2048
    @Option(help: "Bytes per seal call (the relay's read size).") var chunk = 256 * 1024
    @Option(help: "Rounds; the figures are the median round.") var rounds = 5
    @Flag(help: "Seal and open each record through swift-crypto's public AES.GCM instead of the record layer's BoringSSL context, to measure what the public API would cost.")
    var publicAPI = false

    func validate() throws {
        guard megabytes > 0, rounds > 0 else { throw ValidationError("--megabytes and --rounds must be positive") }
        guard (1...(64 << 20)).contains(chunk) else { throw ValidationError("--chunk must be 1 to 64 MiB") }
    }

    func run() throws {
        let plaintext = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { plaintext.deallocate() }
        var generator = SystemRandomNumberGenerator()
        for i in 0..<chunk { plaintext[i] = generator.next() }
        let probe = RecordSealer(key: SymmetricKey(size: .bits256), cipher: .aesGCM)
        let wire = UnsafeMutableRawBufferPointer.allocate(byteCount: probe.sealedLength(ofPlaintextCount: chunk), alignment: 64)
        defer { wire.deallocate() }
        let opened = UnsafeMutableRawBufferPointer.allocate(byteCount: wire.count, alignment: 64)
        defer { opened.deallocate() }
        let chunks = max(1, megabytes * 1_000_000 / chunk)
        let gigabytes = Double(chunks * chunk) / 1e9

        var seal: [Double] = [], open: [Double] = [], copy: [Double] = []
        for _ in 0..<rounds {
            let key = SymmetricKey(size: .bits256)
            let sealer = RecordSealer(key: key, cipher: .aesGCM)
            let opener = RecordOpener(key: key, cipher: .aesGCM)
            var sealTime = 0.0, openTime = 0.0
            var counter: UInt64 = 0
            for _ in 0..<chunks {
                let t0 = threadCPUSeconds()
                let n = publicAPI ? try PublicAPIRecords.seal(plaintext, key: key, counter: counter, recordPayload: probe.recordPayload, into: wire)
                    : try sealer.seal(UnsafeRawBufferPointer(plaintext), into: wire)
                let t1 = threadCPUSeconds()
                let m = publicAPI ? try PublicAPIRecords.open(UnsafeRawBufferPointer(rebasing: wire[0..<n]), key: key, counter: counter, into: opened)
                    : try opener.open(UnsafeRawBufferPointer(rebasing: wire[0..<n]), into: opened)
                openTime += threadCPUSeconds() - t1
                sealTime += t1 - t0
                counter += UInt64((chunk + probe.recordPayload - 1) / probe.recordPayload)
                guard m == chunk else { throw ValidationError("opened \(m) bytes of \(chunk)") }
            }
            guard memcmp(opened.baseAddress!, plaintext.baseAddress!, chunk) == 0 else {
                throw ValidationError("opened records differ from the plaintext")
            }
            let c0 = threadCPUSeconds()
            for _ in 0..<chunks { memcpy(opened.baseAddress!, plaintext.baseAddress!, chunk) }
            copy.append((threadCPUSeconds() - c0) / gigabytes)
            seal.append(sealTime / gigabytes)
            open.append(openTime / gigabytes)
        }
        let median = { (xs: [Double]) -> Double in xs.sorted()[xs.count / 2] }
        let fields: [(String, String)] = [
            ("cipher", "\"\(NoiseCipher.aesGCM.name)\""), ("api", publicAPI ? "\"public AES.GCM\"" : "\"record layer\""),
            ("record_payload", String(probe.recordPayload)),
            ("chunk", String(chunk)), ("gigabytes_per_round", format(gigabytes)), ("rounds", String(rounds)),
            ("seal_cpu_s_per_gb", format(median(seal))), ("open_cpu_s_per_gb", format(median(open))),
            ("seal_and_open_cpu_s_per_gb", format(median(zip(seal, open).map { $0 + $1 }))),
            ("copy_cpu_s_per_gb", format(median(copy))),
        ]
        print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
    }
}

private func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The same records (2-byte length, ciphertext, tag; Noise's AES-GCM nonce) through swift-crypto's
/// public API: what the record layer would cost without its own BoringSSL context.
enum PublicAPIRecords {
    static func nonce(_ counter: UInt64) throws -> AES.GCM.Nonce {
        try AES.GCM.Nonce(data: [0, 0, 0, 0] + withUnsafeBytes(of: counter.bigEndian) { Array($0) })
    }

    static func seal(_ plaintext: UnsafeMutableRawBufferPointer, key: SymmetricKey, counter: UInt64, recordPayload: Int,
                     into out: UnsafeMutableRawBufferPointer) throws -> Int {
        var written = 0
        var offset = 0
        var counter = counter
        while offset < plaintext.count {
            let end = min(offset + recordPayload, plaintext.count)
            let box = try AES.GCM.seal(UnsafeRawBufferPointer(rebasing: plaintext[offset..<end]), using: key, nonce: nonce(counter))
            let length = box.ciphertext.count + box.tag.count
            out[written] = UInt8(length >> 8)
            out[written + 1] = UInt8(length & 0xFF)
            box.ciphertext.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: out[(written + 2)...]))
            box.tag.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: out[(written + 2 + box.ciphertext.count)...]))
            written += 2 + length
            offset = end
            counter += 1
        }
        return written
    }

    static func open(_ wire: UnsafeRawBufferPointer, key: SymmetricKey, counter: UInt64,
                     into out: UnsafeMutableRawBufferPointer) throws -> Int {
        var read = 0
        var written = 0
        var counter = counter
        while read < wire.count {
            let length = Int(wire[read]) << 8 | Int(wire[read + 1])
            let record = UnsafeRawBufferPointer(rebasing: wire[(read + 2)..<(read + 2 + length)])
            let box = try AES.GCM.SealedBox(nonce: nonce(counter), ciphertext: record.dropLast(16), tag: record.suffix(16))
            let plaintext = try AES.GCM.open(box, using: key)
            plaintext.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: out[written...]))
            written += plaintext.count
            read += 2 + length
            counter += 1
        }
        return written
    }
}
