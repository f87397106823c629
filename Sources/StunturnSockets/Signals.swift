import Glibc

/// Process-wide signal settings; waiting for SIGTERM and SIGINT is swift-service-lifecycle's job.
public enum TerminationSignal {
    /// Ignores SIGHUP from now on. ssh hangs up its ProxyCommand as it exits, right after closing
    /// the command's stdin and stdout; dying then would cut the tunnel before it is ended in
    /// order, and the peer would take the session for a broken one. The end of stdin ends the
    /// session instead.
    public static func ignoreHangUp() {
        signal(SIGHUP, SIG_IGN)
    }

    /// Unblocks SIGINT and SIGTERM on the calling thread (call it from the main thread first thing).
    public static func unblock() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

}
