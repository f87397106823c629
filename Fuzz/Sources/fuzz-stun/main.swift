import FuzzSupport
import StunturnServer
import StunturnSignaling
import StunturnSockets

// STUN datagrams as the server's STUN port and the agent's discovery receive them.

private let integrityKey = Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)  // RFC 5769's short-term password
private let sender = SocketAddress(bytes: [192, 0, 2, 1], port: 32853)

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = inputBytes(data, size)
    _ = STUNMessage.verifyFingerprint(bytes)
    _ = STUNMessage.verifyMessageIntegrity(bytes, key: integrityKey)
    // What the server answers to any datagram on its STUN port: a Binding response, the sender
    // as text, or nothing.
    _ = RendezvousServer.stunResponse(to: bytes, from: sender)
    guard let message = try? STUNMessage.decode(bytes) else { return 0 }
    _ = message.messageType
    _ = message.xorMappedAddress
    _ = message.mappedAddress
    _ = message.software
    _ = message.username
    // A message that decodes encodes back to itself.
    let encoded = message.encode()
    guard let again = try? STUNMessage.decode(encoded), again == message else {
        fatalError("STUN message does not survive encode and decode: \(message)")
    }
    return 0
}

runFuzzer(seeds: [
        STUNMessage.bindingRequest(transactionID: Array(1...12), software: "stunturn").encode(fingerprint: true),
        STUNMessage.bindingSuccess(transactionID: Array(1...12), mapped: sender, software: "stunturn").encode(fingerprint: true),
        STUNMessage.bindingSuccess(transactionID: Array(1...12), mapped: SocketAddress(ip: "2001:db8::1", port: 7000)!)
            .encode(integrityKey: integrityKey, fingerprint: true),
        // An RFC 3489 Binding request: no magic cookie, a 16-byte transaction id.
        [0x00, 0x01, 0x00, 0x00] + Array(1...16),
    ], fuzz)
