#ifndef STUNTURN_SYSTEM_H
#define STUNTURN_SYSTEM_H

// Linux calls that Swift's Glibc module leaves out because they need _GNU_SOURCE. Only plain C
// types appear here, so this header never clashes with the Glibc module's view of system headers.
#include <stddef.h>

/// A non-blocking, close-on-exec pipe; returns 0 or -1 with errno set.
int stunturn_pipe(int fds[2]);

/// Asks for a pipe buffer of `size` bytes; returns the size granted or -1.
int stunturn_set_pipe_size(int fd, int size);

/// Moves up to `count` bytes between a socket and a pipe inside the kernel (splice(2)).
long stunturn_splice(int from, int to, size_t count, int more);

/// 1 where splice(2) is available.
int stunturn_has_splice(void);

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC: one call instead of accept and three fcntl.
/// `address` points to a sockaddr_storage of `*length` bytes.
int stunturn_accept_nonblocking(int fd, void *address, unsigned int *length);

/// epoll, for the readiness group, the descriptor poller and the benchmarks' load generator
/// (Swift's Glibc module has no sys/epoll.h).
/// Readiness bits: 1 readable, 4 writable, as EPOLLIN and EPOLLOUT.
int stunturn_epoll_create(void);
/// Adds (`op` 0), changes (1) or removes (2) `fd` in the set with `events` (EPOLLIN 1, EPOLLOUT 4,
/// EPOLLONESHOT 1 << 30); returns 0 or -1 with errno set. A closed descriptor leaves the set by
/// itself (unless another descriptor still refers to the same open file).
int stunturn_epoll_control(int epoll, int op, int fd, unsigned events);
/// Waits up to `timeout_ms`; fills `fds` with up to `max` ready descriptors and, when `events` is
/// not NULL, each one's ready bits (EPOLLIN 1, EPOLLOUT 4, EPOLLERR 8, EPOLLHUP 16). Callers that
/// pass NULL find out what is ready by trying.
int stunturn_epoll_wait(int epoll, int *fds, unsigned *events, int max, int timeout_ms);

/// Hands memory that malloc holds free back to the kernel (glibc's malloc_trim(0)); returns 1 when
/// some was released. Elsewhere it does nothing and returns 0.
int stunturn_release_free_memory(void);

/// Caps how many heaps (arenas) glibc's malloc makes for the process's threads, unless the
/// environment sets MALLOC_ARENA_MAX; returns 1 when set. Elsewhere it does nothing.
int stunturn_limit_malloc_arenas(int count);

#endif
