/* detpack's file-time preload for `rebuild --pypi` under the publisher's clock.
 *
 * libfaketime fakes the clock a process reads, but a file's time is the kernel's: a file the
 * build writes carries today's time, and a backend that stamps zip members from the file's mtime
 * (bdist_wheel, setuptools, flit for copied files) writes today into the wheel. This library makes
 * every stat of a file changed since DETPACK_FILE_TIMES's first number (seconds since the epoch:
 * the moment the rebuild started) report its second number (the publisher's instant) as its
 * access, change, modification and birth times, to the second; below the second, how long after
 * the start it changed (see fraction()). Files older than the publisher's instant (the sdist's,
 * unpacked with their own times; most of the system's) are reported as they are; files between
 * that instant and the rebuild's start just before the instant (see newer_than_publisher()).
 *
 * DETPACK_FILE_TIMES="SINCE AS"; unset or malformed: every call passes through unchanged.
 * Built by detpack with the system's C compiler (cc -shared -fPIC ... -ldl) and loaded with
 * LD_PRELOAD before libfaketime.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

static long long since = -1;
static long long as_of = 0;

__attribute__((constructor)) static void detpack_file_times_init(void) {
    const char *value = getenv("DETPACK_FILE_TIMES");
    char *end = NULL;
    long long first, second;
    if (value == NULL) return;
    errno = 0;
    first = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != ' ') return;
    value = end + 1;
    second = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || first < 0) return;
    since = first;
    as_of = second;
}

/* The publisher's second, with the time since the rebuild started kept below it, in microseconds
 * (up to 1000 s): zip times (2 s) show the publisher's instant, while make and ninja still see
 * which file was written after which (frozen equal times leave ninja's manifest "still dirty"). */
static long long fraction(long long seconds, long long nanoseconds) {
    long long micro = (seconds - since) * 1000000LL + nanoseconds / 1000;
    return micro > 999999999LL ? 999999999LL : micro;
}

/* Before the rebuild but after the publisher's instant (a download cached by an earlier build, a
 * system file newer than the release): shown 2 s before that instant, so nothing the build writes
 * looks older than what it read (ninja rebuilds its manifest forever otherwise). */
static int newer_than_publisher(long long seconds) { return seconds > as_of + 2; }

static void fix_time(struct timespec *t) {
    if (since < 0) return;
    if ((long long)t->tv_sec >= since) {
        t->tv_nsec = (long)fraction((long long)t->tv_sec, (long long)t->tv_nsec);
        t->tv_sec = (time_t)as_of;
    } else if (newer_than_publisher((long long)t->tv_sec)) {
        t->tv_sec = (time_t)(as_of - 2);
    }
}

#define FIX_STAT(buf)              \
    do {                           \
        fix_time(&(buf)->st_atim); \
        fix_time(&(buf)->st_mtim); \
        fix_time(&(buf)->st_ctim); \
    } while (0)

static void fix_statx_time(struct statx_timestamp *t) {
    if (since < 0) return;
    if ((long long)t->tv_sec >= since) {
        t->tv_nsec = (__u32)fraction((long long)t->tv_sec, (long long)t->tv_nsec);
        t->tv_sec = as_of;
    } else if (newer_than_publisher((long long)t->tv_sec)) {
        t->tv_sec = as_of - 2;
    }
}

static void *next(const char *name) { return dlsym(RTLD_NEXT, name); }

#define NOT_FOUND()     \
    do {                \
        errno = ENOSYS; \
        return -1;      \
    } while (0)

/* One wrapper: call the next definition (glibc's), then correct the times of a successful stat. */
#define WRAP_STAT(name, params, args, buf)                                    \
    int name params {                                                         \
        static int(*real) params;                                             \
        if (real == NULL && (real = next(#name)) == NULL) NOT_FOUND();        \
        int rc = real args;                                                   \
        if (rc == 0) FIX_STAT(buf);                                           \
        return rc;                                                            \
    }

WRAP_STAT(stat, (const char *path, struct stat *buf), (path, buf), buf)
WRAP_STAT(lstat, (const char *path, struct stat *buf), (path, buf), buf)
WRAP_STAT(fstat, (int fd, struct stat *buf), (fd, buf), buf)
WRAP_STAT(fstatat, (int dirfd, const char *path, struct stat *buf, int flags), (dirfd, path, buf, flags), buf)
WRAP_STAT(stat64, (const char *path, struct stat64 *buf), (path, buf), buf)
WRAP_STAT(lstat64, (const char *path, struct stat64 *buf), (path, buf), buf)
WRAP_STAT(fstat64, (int fd, struct stat64 *buf), (fd, buf), buf)
WRAP_STAT(fstatat64, (int dirfd, const char *path, struct stat64 *buf, int flags), (dirfd, path, buf, flags), buf)

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    static int (*real)(int, const char *, int, unsigned int, struct statx *);
    if (real == NULL && (real = next("statx")) == NULL) NOT_FOUND();
    int rc = real(dirfd, path, flags, mask, buf);
    if (rc == 0) {
        fix_statx_time(&buf->stx_atime);
        fix_statx_time(&buf->stx_btime);
        fix_statx_time(&buf->stx_ctime);
        fix_statx_time(&buf->stx_mtime);
    }
    return rc;
}

/* glibc before 2.33 routed stat through these; programs linked then still call them. */
WRAP_STAT(__xstat, (int ver, const char *path, struct stat *buf), (ver, path, buf), buf)
WRAP_STAT(__lxstat, (int ver, const char *path, struct stat *buf), (ver, path, buf), buf)
WRAP_STAT(__fxstat, (int ver, int fd, struct stat *buf), (ver, fd, buf), buf)
WRAP_STAT(__fxstatat, (int ver, int dirfd, const char *path, struct stat *buf, int flags),
          (ver, dirfd, path, buf, flags), buf)
WRAP_STAT(__xstat64, (int ver, const char *path, struct stat64 *buf), (ver, path, buf), buf)
WRAP_STAT(__lxstat64, (int ver, const char *path, struct stat64 *buf), (ver, path, buf), buf)
WRAP_STAT(__fxstat64, (int ver, int fd, struct stat64 *buf), (ver, fd, buf), buf)
WRAP_STAT(__fxstatat64, (int ver, int dirfd, const char *path, struct stat64 *buf, int flags),
          (ver, dirfd, path, buf, flags), buf)
