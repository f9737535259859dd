/* A filesystem without record locks, for one process: every fcntl lock request fails with ENOLCK, as on
 * NFS mounted with nolock, or a FUSE filesystem without lock support. Other fcntl commands pass through.
 *
 *   gcc -shared -fPIC -o nolocks.so nolocks.c -ldl ;  LD_PRELOAD=./nolocks.so python -m fetcher
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>

static int is_lock(int cmd) {
    switch (cmd) {
    case F_SETLK: case F_SETLKW: case F_GETLK:
#ifdef F_OFD_SETLK
    case F_OFD_SETLK: case F_OFD_SETLKW: case F_OFD_GETLK:
#endif
        return 1;
    default:
        return 0;
    }
}

static int forward(const char *name, int fd, int cmd, void *arg) {
    int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, name);
    return real(fd, cmd, arg);
}

int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (is_lock(cmd)) { errno = ENOLCK; return -1; }
    return forward("fcntl", fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (is_lock(cmd)) { errno = ENOLCK; return -1; }
    return forward("fcntl64", fd, cmd, arg);
}

int lockf(int fd, int cmd, off_t len) {
    (void)fd; (void)cmd; (void)len;
    errno = ENOLCK;
    return -1;
}
