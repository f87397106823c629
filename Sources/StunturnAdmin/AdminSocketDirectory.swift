#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import StunturnSockets

/// The directory where agents open their admin sockets by default, one per agent, named by
/// process id, so that several agents on one host never share one and `status` finds them all:
/// `$XDG_RUNTIME_DIR/stunturn` (private to the user, emptied at logout), else `/tmp/stunturn-UID`.
public enum AdminSocketDirectory {
    /// The default directory for this user.
    public static func path(environment: [String: String] = ProcessInfo.processInfo.environment,
                            userID: UInt32 = SystemIO.userID) -> String {
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/"),
           SystemIO.fileStatus(runtime)?.kind == .directory {
            return (runtime.hasSuffix("/") ? String(runtime.dropLast()) : runtime) + "/stunturn"
        }
        return "/tmp/stunturn-\(userID)"
    }

    /// The socket of the agent with process id `pid` in `directory`.
    public static func socketPath(forAgent pid: Int32, in directory: String) -> String {
        "\(directory)/agent-\(pid).sock"
    }

    /// Creates `directory` (mode 0700), or checks the one there: a directory of this user's, which
    /// nobody else may enter (its mode is set to 0700 when it was wider). Under /tmp anyone could
    /// have made it first, so it is not used unless it passes.
    public static func prepare(_ directory: String) throws(AdminError) {
        do {
            try SystemIO.makeDirectory(directory, mode: 0o700)
        } catch {
            throw AdminError(.unusable, path: directory, "cannot create the admin socket directory \(directory): \(error)", underlying: error)
        }
        guard let status = SystemIO.fileStatus(directory), status.kind == .directory else {
            throw AdminError(.unusable, path: directory, "\(directory) is not a directory; remove it or choose an admin socket path")
        }
        guard status.owner == SystemIO.userID else {
            throw AdminError(.unusable, path: directory,
                             "\(directory) belongs to user \(status.owner), not to this user (\(SystemIO.userID)); remove it or choose an admin socket path")
        }
        if status.permissions & 0o077 != 0 {
            do {
                try SystemIO.setPermissions(directory, 0o700)
            } catch {
                throw AdminError(.unusable, path: directory, "cannot make \(directory) private: \(error)", underlying: error)
            }
        }
    }

    /// The agents' sockets in `directory`, by process id (other files are left out).
    public static func agentSockets(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let agents = names.compactMap { name -> (pid: Int32, path: String)? in
            guard name.hasPrefix("agent-"), name.hasSuffix(".sock"),
                  let pid = Int32(name.dropFirst("agent-".count).dropLast(".sock".count)) else { return nil }
            return (pid, "\(directory)/\(name)")
        }
        return agents.sorted { $0.pid < $1.pid }.map(\.path)
    }

    /// At most this many sockets are looked at when clearing stale ones: the directory is the
    /// user's own, so this only bounds the work of one start.
    static let maximumStaleChecked = 256

    /// Removes the sockets in `directory` that no agent listens on any more (agents killed
    /// without their clean-up): each refuses a connection. A socket appears only once its agent
    /// listens (`UnixSocket.listener(at:)`), so a starting agent's is never taken for one.
    public static func removeStaleSockets(in directory: String) {
        for path in agentSockets(in: directory).prefix(maximumStaleChecked) where SystemIO.fileStatus(path)?.kind == .socket {
            if case .refused = UnixSocket.probe(path) { SystemIO.removeFile(path) }
        }
    }
}
