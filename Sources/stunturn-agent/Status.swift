import ArgumentParser
import Foundation
import StunturnAdmin
import StunturnConfig

/// `--admin` of run and forward: where the agent answers `status`.
struct AdminOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The Unix socket where this agent answers 'stunturn-agent status', or none (default: YAML admin for run, else a socket of the agent's own in $XDG_RUNTIME_DIR/stunturn or /tmp/stunturn-UID, which status finds by itself).",
        valueName: "path|none"))
    var admin: String?

    func validate() throws {
        if let admin, admin.lowercased() != "none", let problem = AdminSocketSetting.problem(with: admin) {
            throw ValidationError("--admin \(problem)")
        }
    }

    /// What was given; nil when the option was left out.
    var setting: AdminSocketSetting? {
        admin.map { $0.lowercased() == "none" ? .disabled : .path($0) }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the forwards of running agents: path (direct, relay or none), peer, streams, bytes and errors.",
        discussion: """
            Asks agents on their admin sockets. Without --admin, every agent of this user on this \
            host that runs with its default socket (in $XDG_RUNTIME_DIR/stunturn, else \
            /tmp/stunturn-UID) is asked; ask an agent started with --admin PATH (YAML admin) with \
            the same --admin PATH. Exits 1 when no agent answers.
            """)

    @Option(name: .long, help: ArgumentHelp("The admin socket of the agent to ask (default: every agent of this user on this host).",
                                            valueName: "path"))
    var admin: String?

    @Flag(name: .long, help: "Print JSON (snake_case keys; null for what is not known) instead of a table.")
    var json = false

    func run() async throws {
        try await guarded {
            if let admin {
                let status: AgentStatus
                do {
                    let answer = try await AdminClient.ask(.status, at: admin)
                    // A signaling server answers with its own view.
                    if let server = ServerStatus.decode(answer) {
                        print(json ? String(decoding: try server.encoded(pretty: true), as: UTF8.self) : server.table)
                        return
                    }
                    status = try AgentStatus(decoding: answer)
                } catch {
                    throw FailureExit.message("stunturn-agent status: \(error)", code: 1)
                }
                print(json ? String(decoding: try status.encoded(pretty: true), as: UTF8.self) : StatusTable.render(status))
                return
            }
            let directory = AdminSocketDirectory.path()
            let agents = await Self.askAll(AdminSocketDirectory.agentSockets(in: directory))
            if json { print(String(decoding: try AgentStatusList(agents: agents).encoded(pretty: true), as: UTF8.self)) }
            guard !agents.isEmpty else {
                throw FailureExit.message(
                    "stunturn-agent status: no agent of this user is running on this host (none answered in \(directory)); an agent started with --admin PATH is asked with status --admin PATH",
                    code: 1)
            }
            if !json { print(StatusTable.render(agents)) }
        }
    }

    /// Asks every socket at once, in order of the list; sockets whose agent has gone are left
    /// out, and other failures are reported on stderr.
    static func askAll(_ paths: [String]) async -> [AgentStatus] {
        let answers = await withTaskGroup(of: (Int, Result<AgentStatus, AdminError>).self) { group in
            for (index, path) in paths.enumerated() {
                group.addTask {
                    do throws(AdminError) {
                        return (index, .success(try await AdminClient.status(at: path)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var answers: [(Int, Result<AgentStatus, AdminError>)] = []
            for await answer in group { answers.append(answer) }
            return answers.sorted { $0.0 < $1.0 }.map(\.1)
        }
        var agents: [AgentStatus] = []
        for answer in answers {
            switch answer {
            case .success(let status):
                agents.append(status)
            case .failure(let error) where error.code == .stale || error.code == .notFound:
                continue
            case .failure(let error):
                FileHandle.standardError.write(Data("stunturn-agent status: \(error)\n".utf8))
            }
        }
        return agents
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a running agent read its config file again (as SIGHUP does) and say what changed.",
        discussion: """
            Forwards added, removed or changed start, stop or restart; the others keep their \
            sessions and streams. An invalid file changes nothing: every problem is printed and \
            the agent goes on as it was (exit 1). Without --admin, the one agent of this user on \
            this host is asked.
            """)

    @Option(name: .long, help: ArgumentHelp("The admin socket of the agent to reload (default: the one agent of this user on this host).",
                                            valueName: "path"), completion: .file())
    var admin: String?

    func run() async throws {
        try await guarded {
            var path = admin
            if path == nil {
                let directory = AdminSocketDirectory.path()
                let live = await Status.askAll(AdminSocketDirectory.agentSockets(in: directory)).map(\.admin)
                guard live.count == 1 else {
                    throw FailureExit.message(live.isEmpty
                        ? "stunturn-agent reload: no agent of this user is running on this host (none answered in \(directory))"
                        : "stunturn-agent reload: \(live.count) agents are running; say which with --admin PATH (\(live.joined(separator: ", ")))",
                        code: 1)
                }
                path = live[0]
            }
            let answer: [UInt8]
            do {
                answer = try await AdminClient.ask(.reload, at: path ?? "", timeout: .seconds(60))
            } catch {
                throw FailureExit.message("stunturn-agent reload: \(error)", code: 1)
            }
            print(String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}
