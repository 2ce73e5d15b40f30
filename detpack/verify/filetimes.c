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
 * DETPACK_FILE_TIMES_EACH (optional): "SECONDS SUFFIX" pairs, blank-separated; a file changed since SINCE whose
 * absolute path ends with SUFFIX reports SECONDS instead of AS (the publisher's build wrote it at
 * another instant than the rest, as the published wheel's member time shows: setuptools' egg_info
 * files, written a zip time or two before the .dist-info copies of them).
 * Built by detpack with the system's C compiler (cc -shared -fPIC ... -ldl) and loaded with
 * LD_PRELOAD before libfaketime.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

static long long since = -1;
static long long as_of = 0;

#define MAX_EACH 4096
static int each_count = 0;
static long long each_time[MAX_EACH];
static const char *each_suffix[MAX_EACH];
static size_t each_length[MAX_EACH];

/* DETPACK_FILE_TIMES_EACH's pairs, kept in a copy of the variable (split in place at blanks). */
static void read_each(void) {
    const char *value = getenv("DETPACK_FILE_TIMES_EACH");
    char *copy, *seconds, *suffix, *end, *rest = NULL;
    if (value == NULL || (copy = strdup(value)) == NULL) return;
    while (each_count < MAX_EACH && (seconds = strtok_r(rest == NULL ? copy : NULL, " \t\n", &rest)) != NULL &&
           (suffix = strtok_r(NULL, " \t\n", &rest)) != NULL) {
        errno = 0;
        long long when = strtoll(seconds, &end, 10);
        if (errno != 0 || end == seconds || *end != '\0') continue;
        each_time[each_count] = when;
        each_suffix[each_count] = suffix;
        each_length[each_count] = strlen(suffix);
        each_count++;
    }
}

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
    read_each();
}

/* The absolute path of what a stat call looked at: PATH against DIRFD (AT_FDCWD: the working
 * directory), or the descriptor's own file when PATH is NULL or empty. False when not known. */
static int where(int dirfd, const char *path, char *out, size_t size) {
    char link[64];
    ssize_t n;
    if (path != NULL && path[0] == '/') {
        if (strlen(path) >= size) return 0;
        strcpy(out, path);
        return 1;
    }
    if (path != NULL && path[0] != '\0' && dirfd == AT_FDCWD) {
        if (getcwd(out, size) == NULL) return 0;
    } else {
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        n = readlink(link, out, size - 1);
        if (n < 0) return 0;
        out[n] = '\0';
    }
    if (path != NULL && path[0] != '\0') {
        size_t have = strlen(out);
        if (have + 1 + strlen(path) >= size) return 0;
        out[have] = '/';
        strcpy(out + have + 1, path);
    }
    return 1;
}

/* The instant a file changed since the start reports: its own from DETPACK_FILE_TIMES_EACH, or AS. */
static long long instant_of(int dirfd, const char *path) {
    char full[PATH_MAX];
    size_t length;
    if (each_count == 0 || !where(dirfd, path, full, sizeof full)) return as_of;
    length = strlen(full);
    for (int i = 0; i < each_count; i++) {
        if (each_length[i] <= length && strcmp(full + length - each_length[i], each_suffix[i]) == 0) {
            return each_time[i];
        }
    }
    return as_of;
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

static void fix_time(struct timespec *t, long long instant) {
    if (since < 0) return;
    if ((long long)t->tv_sec >= since) {
        t->tv_nsec = (long)fraction((long long)t->tv_sec, (long long)t->tv_nsec);
        t->tv_sec = (time_t)instant;
    } else if (newer_than_publisher((long long)t->tv_sec)) {
        t->tv_sec = (time_t)(as_of - 2);
    }
}

/* Whether any of a stat's times is one the library rewrites with AS (or the file's own instant). */
#define CHANGED(buf)                                                                          \
    (since >= 0 && ((long long)(buf)->st_atim.tv_sec >= since || (long long)(buf)->st_mtim.tv_sec >= since || \
                    (long long)(buf)->st_ctim.tv_sec >= since))

#define FIX_STAT(buf, dirfd, path)                                                   \
    do {                                                                             \
        long long instant = CHANGED(buf) ? instant_of((dirfd), (path)) : as_of;      \
        fix_time(&(buf)->st_atim, instant);                                          \
        fix_time(&(buf)->st_mtim, instant);                                          \
        fix_time(&(buf)->st_ctim, instant);                                          \
    } while (0)

static void fix_statx_time(struct statx_timestamp *t, long long instant) {
    if (since < 0) return;
    if ((long long)t->tv_sec >= since) {
        t->tv_nsec = (__u32)fraction((long long)t->tv_sec, (long long)t->tv_nsec);
        t->tv_sec = instant;
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
#define WRAP_STAT(name, params, args, buf, dirfd, path)                        \
    int name params {                                                         \
        static int(*real) params;                                             \
        if (real == NULL && (real = next(#name)) == NULL) NOT_FOUND();        \
        int rc = real args;                                                   \
        if (rc == 0) FIX_STAT(buf, dirfd, path);                              \
        return rc;                                                            \
    }

WRAP_STAT(stat, (const char *path, struct stat *buf), (path, buf), buf, AT_FDCWD, path)
WRAP_STAT(lstat, (const char *path, struct stat *buf), (path, buf), buf, AT_FDCWD, path)
WRAP_STAT(fstat, (int fd, struct stat *buf), (fd, buf), buf, fd, NULL)
WRAP_STAT(fstatat, (int dirfd, const char *path, struct stat *buf, int flags), (dirfd, path, buf, flags), buf, dirfd, path)
WRAP_STAT(stat64, (const char *path, struct stat64 *buf), (path, buf), buf, AT_FDCWD, path)
WRAP_STAT(lstat64, (const char *path, struct stat64 *buf), (path, buf), buf, AT_FDCWD, path)
WRAP_STAT(fstat64, (int fd, struct stat64 *buf), (fd, buf), buf, fd, NULL)
WRAP_STAT(fstatat64, (int dirfd, const char *path, struct stat64 *buf, int flags), (dirfd, path, buf, flags), buf, dirfd, path)

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    static int (*real)(int, const char *, int, unsigned int, struct statx *);
    if (real == NULL && (real = next("statx")) == NULL) NOT_FOUND();
    int rc = real(dirfd, path, flags, mask, buf);
    if (rc == 0) {
        int changed = since >= 0 && ((long long)buf->stx_mtime.tv_sec >= since || (long long)buf->stx_ctime.tv_sec >= since);
        /* glibc declares path nonnull, but Linux 6.11 takes NULL with AT_EMPTY_PATH: kept from being assumed */
        const char *seen = path;
        __asm__("" : "+r"(seen));
        long long instant = changed ? instant_of(dirfd, seen == NULL || ((flags & AT_EMPTY_PATH) && seen[0] == '\0') ? NULL : seen) : as_of;
        fix_statx_time(&buf->stx_atime, instant);
        fix_statx_time(&buf->stx_btime, instant);
        fix_statx_time(&buf->stx_ctime, instant);
        fix_statx_time(&buf->stx_mtime, instant);
    }
    return rc;
}

/* glibc before 2.33 routed stat through these; programs linked then still call them. */
WRAP_STAT(__xstat, (int ver, const char *path, struct stat *buf), (ver, path, buf), buf, AT_FDCWD, path)
WRAP_STAT(__lxstat, (int ver, const char *path, struct stat *buf), (ver, path, buf), buf, AT_FDCWD, path)
WRAP_STAT(__fxstat, (int ver, int fd, struct stat *buf), (ver, fd, buf), buf, fd, NULL)
WRAP_STAT(__fxstatat, (int ver, int dirfd, const char *path, struct stat *buf, int flags),
          (ver, dirfd, path, buf, flags), buf, dirfd, path)
WRAP_STAT(__xstat64, (int ver, const char *path, struct stat64 *buf), (ver, path, buf), buf, AT_FDCWD, path)
WRAP_STAT(__lxstat64, (int ver, const char *path, struct stat64 *buf), (ver, path, buf), buf, AT_FDCWD, path)
WRAP_STAT(__fxstat64, (int ver, int fd, struct stat64 *buf), (ver, fd, buf), buf, fd, NULL)
WRAP_STAT(__fxstatat64, (int ver, int dirfd, const char *path, struct stat64 *buf, int flags),
          (ver, dirfd, path, buf, flags), buf, dirfd, path)
