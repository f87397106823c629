#define _GNU_SOURCE
#include "stunturn_system.h"
#include <errno.h>

#ifdef __linux__
#include <fcntl.h>
#include <unistd.h>

int stunturn_pipe(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }

int stunturn_set_pipe_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }

long stunturn_splice(int from, int to, size_t count, int more) {
    unsigned int flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE | (more ? SPLICE_F_MORE : 0);
    return (long)splice(from, NULL, to, NULL, count, flags);
}

int stunturn_has_splice(void) { return 1; }
#else
int stunturn_pipe(int fds[2]) { (void)fds; errno = ENOSYS; return -1; }
int stunturn_set_pipe_size(int fd, int size) { (void)fd; (void)size; errno = ENOSYS; return -1; }
long stunturn_splice(int from, int to, size_t count, int more) {
    (void)from; (void)to; (void)count; (void)more; errno = ENOSYS; return -1;
}
int stunturn_has_splice(void) { return 0; }
#endif

#include <sys/epoll.h>
#include <sys/socket.h>

int stunturn_accept_nonblocking(int fd, void *address, unsigned int *length) {
    socklen_t len = *length;
    int accepted = accept4(fd, (struct sockaddr *)address, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    *length = len;
    return accepted;
}

int stunturn_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int stunturn_epoll_control(int epoll, int op, int fd, unsigned events) {
    static const int ops[] = { EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL };
    if (op < 0 || op > 2) { errno = EINVAL; return -1; }
    struct epoll_event event = { .events = events, .data = { .fd = fd } };
    return epoll_ctl(epoll, ops[op], fd, &event);
}

int stunturn_epoll_wait(int epoll, int *fds, unsigned *events, int max, int timeout_ms) {
    struct epoll_event ready[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epoll, ready, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        fds[i] = ready[i].data.fd;
        if (events) events[i] = ready[i].events;
    }
    return n;
}

#if defined(__GLIBC__)
#include <malloc.h>
#include <stdlib.h>
int stunturn_release_free_memory(void) { return malloc_trim(0); }
int stunturn_limit_malloc_arenas(int count) {
    if (getenv("MALLOC_ARENA_MAX") != NULL) return 0;
    return mallopt(M_ARENA_MAX, count);
}
#else
int stunturn_release_free_memory(void) { return 0; }
int stunturn_limit_malloc_arenas(int count) { (void)count; return 0; }
#endif
