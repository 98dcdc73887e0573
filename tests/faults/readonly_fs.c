/* readonly_fs.c: an LD_PRELOAD shim that makes one SQLite database unwritable under a
 * running process, on demand, as a read-only remount of its file system would.
 *
 * Why: `chmod` cannot do it. A running gateway's descriptors were opened read-write before,
 * and root ignores file modes. A read-only remount does reach open descriptors, but needs
 * privileges and a mount of its own. SQLite's unix VFS calls the libc functions below through
 * pointers resolved when libsqlite3 is loaded, so a preloaded library sees every call.
 *
 * While the file named by FAULT_READONLY_FLAG exists, every write, truncate and sync of a
 * file named *.db, *.db-wal, *.db-shm or *.db-journal (the process's SQLite databases; the
 * descriptor's path read from /proc/self/fd) fails with EROFS, and so does opening one for
 * writing; once the flag file is removed, the same calls on the same descriptors go through
 * again. Other files (the gateway's log) are never touched. The -shm file is mmapped: its
 * memory writes are not calls and still work. SQLite answers "disk I/O error"
 * (SQLITE_IOERR_WRITE) and rolls the transaction back; its connection works again after.
 *
 * Built by tests/e2e/test_store_faults.py: gcc -shared -fPIC -O2 -o readonly_fs.so readonly_fs.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static const char *const SUFFIXES[] = {".db", ".db-wal", ".db-shm", ".db-journal"};

/* Whether the fault is on: the flag file exists (checked first: one access() per call). */
static int fault_on(void) {
    const char *flag = getenv("FAULT_READONLY_FLAG");
    if (!flag) return 0;
    int saved = errno; /* a missing flag file must not leave ENOENT behind */
    int on = access(flag, F_OK) == 0;
    errno = saved;
    return on;
}

static int db_path(const char *path) {
    if (!path) return 0;
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof SUFFIXES / sizeof *SUFFIXES; i++) {
        size_t k = strlen(SUFFIXES[i]);
        if (n >= k && strcmp(path + n - k, SUFFIXES[i]) == 0) return 1;
    }
    return 0;
}

static int faulty_path(const char *path) { return fault_on() && db_path(path); }

static int faulty_fd(int fd) {
    if (!fault_on()) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int saved = errno;
    ssize_t n = readlink(link, path, sizeof path - 1);
    errno = saved;
    if (n < 0) return 0;
    path[n] = '\0';
    return db_path(path);
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))
#define FAIL_IF(cond)       \
    do {                    \
        if (cond) {         \
            errno = EROFS;  \
            return -1;      \
        }                   \
    } while (0)

static int writes(int flags) {
    return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)) != 0;
}

/* open() and open64(): the mode is read and passed on only when the flags say there is one. */
#define INTERPOSE_OPEN(name)                                 \
    int name(const char *path, int flags, ...) {             \
        mode_t mode = 0;                                     \
        if (flags & (O_CREAT | O_TMPFILE)) {                 \
            va_list args;                                    \
            va_start(args, flags);                           \
            mode = va_arg(args, mode_t);                     \
            va_end(args);                                    \
        }                                                    \
        FAIL_IF(writes(flags) && faulty_path(path));         \
        return REAL(name)(path, flags, mode);                \
    }

INTERPOSE_OPEN(open)
INTERPOSE_OPEN(open64)

ssize_t write(int fd, const void *buf, size_t count) {
    FAIL_IF(faulty_fd(fd));
    return REAL(write)(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    FAIL_IF(faulty_fd(fd));
    return REAL(pwrite)(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    FAIL_IF(faulty_fd(fd));
    return REAL(pwrite64)(fd, buf, count, offset);
}

int ftruncate(int fd, off_t length) {
    FAIL_IF(faulty_fd(fd));
    return REAL(ftruncate)(fd, length);
}

int ftruncate64(int fd, off64_t length) {
    FAIL_IF(faulty_fd(fd));
    return REAL(ftruncate64)(fd, length);
}

int fsync(int fd) {
    FAIL_IF(faulty_fd(fd));
    return REAL(fsync)(fd);
}

int fdatasync(int fd) {
    FAIL_IF(faulty_fd(fd));
    return REAL(fdatasync)(fd);
}
