// The library surface: find a peer, punch a hole, get a socket.
@_exported import StunturnPunch
@_exported import StunturnSecure
@_exported import StunturnSignaling
@_exported import StunturnSockets
