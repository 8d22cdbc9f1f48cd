/*
 * probe: a tiny static helper that runs inside minirun containers and
 * reports what it sees as ONE line of JSON on stdout.
 *
 * The integration tests use it instead of parsing shell output.  It must
 * keep working in minimal environments: no /proc, no /etc, no shared
 * libraries (it is linked statically), arbitrary uid/gid, seccomp filters.
 * Anything that cannot be determined is reported as null rather than
 * failing the whole command.
 *
 * Exit status: 0 whenever a JSON result was printed (including
 * {"ok": false, ...} results), 2 for usage errors, 127 when `exec` fails,
 * 1 if writing stdout failed.
 *
 * Build: cc -static -O2 -Wall -Wextra -o probe probe.c
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <signal.h>

extern char **environ;

#define READ_LIMIT (64 * 1024)

/* ------------------------------------------------------------------------ */
/* Minimal JSON writer.                                                      */
/*                                                                           */
/* Output goes through stdio; separators are emitted automatically: each     */
/* nesting level remembers whether it already holds an element, and a key    */
/* suppresses the separator before its value.                                */
/* ------------------------------------------------------------------------ */

#define MAX_DEPTH 16

static int j_depth;
static int j_has_elem[MAX_DEPTH];
static int j_after_key;

static void j_sep(void)
{
    if (j_after_key) {
        j_after_key = 0;
        return;
    }
    if (j_depth > 0) {
        if (j_has_elem[j_depth])
            fputs(", ", stdout);
        j_has_elem[j_depth] = 1;
    }
}

static void j_open(char c)
{
    j_sep();
    putchar(c);
    if (j_depth + 1 < MAX_DEPTH)
        j_depth++;
    j_has_elem[j_depth] = 0;
}

static void j_close(char c)
{
    putchar(c);
    if (j_depth > 0)
        j_depth--;
}

static void j_obj(void) { j_open('{'); }
static void j_end_obj(void) { j_close('}'); }
static void j_arr(void) { j_open('['); }
static void j_end_arr(void) { j_close(']'); }

/*
 * Length of the well-formed UTF-8 sequence starting at s (at most n bytes
 * available), or 0 if it is not well-formed (overlong, surrogate, > U+10FFFF,
 * truncated).
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

/*
 * Write a JSON string literal.  Control characters become \u00XX.  Bytes
 * that are not valid UTF-8 (file contents, odd environment values) are
 * emitted as \u00XX too, i.e. interpreted as Latin-1, so the output is
 * always valid JSON in valid UTF-8.
 */
static void j_strn(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    j_sep();
    putchar('"');
    while (i < n) {
        unsigned char c = s[i];
        size_t len;

        switch (c) {
        case '"':  fputs("\\\"", stdout); i++; continue;
        case '\\': fputs("\\\\", stdout); i++; continue;
        case '\n': fputs("\\n", stdout); i++; continue;
        case '\r': fputs("\\r", stdout); i++; continue;
        case '\t': fputs("\\t", stdout); i++; continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7f) {
            printf("\\u%04x", c);
            i++;
            continue;
        }
        len = utf8_len(s + i, n - i);
        if (len == 0) {
            printf("\\u%04x", c);
            i++;
            continue;
        }
        fwrite(s + i, 1, len, stdout);
        i += len;
    }
    putchar('"');
}

static void j_str(const char *s)
{
    if (s == NULL) {
        j_sep();
        fputs("null", stdout);
    } else {
        j_strn(s, strlen(s));
    }
}

static void j_int(long long v)
{
    j_sep();
    printf("%lld", v);
}

static void j_null(void)
{
    j_sep();
    fputs("null", stdout);
}

static void j_bool(int v)
{
    j_sep();
    fputs(v ? "true" : "false", stdout);
}

static void j_key(const char *k)
{
    j_str(k);
    fputs(": ", stdout);
    j_after_key = 1;
}

static void kv_int(const char *k, long long v) { j_key(k); j_int(v); }
static void kv_str(const char *k, const char *v) { j_key(k); j_str(v); }
static void kv_null(const char *k) { j_key(k); j_null(); }
static void kv_bool(const char *k, int v) { j_key(k); j_bool(v); }

/* Finish the line; report failure to write stdout (e.g. closed pipe). */
static int j_finish(void)
{
    putchar('\n');
    if (fflush(stdout) != 0 || ferror(stdout))
        return 1;
    return 0;
}

/* {"ok": true} or {"ok": false, "errno": N, "error": "..."}. */
static int print_result(int ok, int err)
{
    j_obj();
    kv_bool("ok", ok);
    if (!ok) {
        kv_int("errno", err);
        kv_str("error", strerror(err));
    }
    j_end_obj();
    return j_finish();
}

/* Result of a call returning -1/errno style. */
static int print_rc(int rc)
{
    int err = errno;
    return print_result(rc == 0, err);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Read a whole file into a NUL-terminated malloc'd buffer.  st_size is
 * useless for /proc files (it is 0), so read until EOF.  limit == 0 means
 * no limit.  Returns NULL with errno set on failure.
 */
static char *slurp(const char *path, size_t limit, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *buf;
    int fd, saved;

    fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    buf = malloc(cap + 1);
    if (buf == NULL)
        goto fail;
    for (;;) {
        size_t want;
        ssize_t r;

        if (limit && len >= limit)
            break;
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        want = cap - len;
        if (limit && want > limit - len)
            want = limit - len;
        r = read(fd, buf + len, want);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    if (out_len)
        *out_len = len;
    return buf;

fail:
    saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return NULL;
}

/* Cached contents of /proc/self/status, or NULL when /proc is unavailable. */
static char *proc_status;

/*
 * Value of "Key:" in /proc/self/status with surrounding whitespace removed,
 * copied into buf.  Returns buf, or NULL if the key (or /proc) is missing.
 */
static char *status_field(const char *key, char *buf, size_t bufsz)
{
    size_t klen = strlen(key);
    const char *line = proc_status;

    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);

        if (llen > klen && strncmp(line, key, klen) == 0 && line[klen] == ':') {
            const char *v = line + klen + 1;
            const char *end = line + llen;
            size_t n;

            while (v < end && isspace((unsigned char)*v))
                v++;
            while (end > v && isspace((unsigned char)end[-1]))
                end--;
            n = (size_t)(end - v);
            if (n >= bufsz)
                n = bufsz - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
        line = eol ? eol + 1 : NULL;
    }
    return NULL;
}

/* readlink() into a NUL-terminated static-size buffer; NULL on failure. */
static char *readlink_str(const char *path, char *buf, size_t bufsz)
{
    ssize_t n = readlink(path, buf, bufsz - 1);

    if (n < 0)
        return NULL;
    buf[n] = '\0';
    return buf;
}

/* Emit the lines of a file as a JSON list, or null if unreadable. */
static void emit_file_lines(const char *path)
{
    size_t len;
    char *data = slurp(path, 0, &len);
    size_t start = 0;

    if (data == NULL) {
        j_null();
        return;
    }
    j_arr();
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            j_strn(data + start, i - start);
            start = i + 1;
        }
    }
    if (start < len) /* last line without trailing newline */
        j_strn(data + start, len - start);
    j_end_arr();
    free(data);
}

static int parse_long(const char *s, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(s, &end, 0);
    return errno == 0 && end != s && *end == '\0';
}

/* ------------------------------------------------------------------------ */
/* probe facts                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Open file descriptors.  Done first in `facts`, before anything else has
 * opened a file, and excluding the directory fd used for the listing, so
 * the result is what the container runtime handed us.
 */
static void emit_fds(void)
{
    DIR *d = opendir("/proc/self/fd");

    j_obj();
    if (d != NULL) {
        int self = dirfd(d);
        struct dirent *de;

        while ((de = readdir(d)) != NULL) {
            char path[PATH_MAX], target[PATH_MAX];
            long fd;

            if (!parse_long(de->d_name, &fd) || fd == self)
                continue;
            snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
            kv_str(de->d_name, readlink_str(path, target, sizeof(target)));
        }
        closedir(d);
    } else {
        /* No /proc: we can still tell which descriptors are open. */
        for (int fd = 0; fd < 1024; fd++) {
            char name[16];

            if (fcntl(fd, F_GETFD) < 0)
                continue;
            snprintf(name, sizeof(name), "%d", fd);
            kv_null(name);
        }
    }
    j_end_obj();
}

static void emit_umask(void)
{
    char buf[32];
    mode_t old;

    /*
     * Prefer /proc: reading the umask with umask() requires changing it,
     * which is harmless here but the kernel value is authoritative.
     */
    if (status_field("Umask", buf, sizeof(buf)) != NULL) {
        kv_int("umask", strtol(buf, NULL, 8));
        return;
    }
    old = umask(0);
    umask(old);
    kv_int("umask", old);
}

/* Print a 64-bit capability mask the way /proc/self/status does. */
static void emit_capmask(const char *key, uint64_t mask)
{
    char buf[20];

    snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)mask);
    kv_str(key, buf);
}

static void emit_caps(void)
{
    static const struct {
        const char *key, *field;
    } caps[] = {
        {"bounding", "CapBnd"},   {"effective", "CapEff"},
        {"permitted", "CapPrm"},  {"inheritable", "CapInh"},
        {"ambient", "CapAmb"},
    };
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    int have_capget;

    j_key("caps");
    j_obj();
    if (proc_status != NULL) {
        for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
            char buf[64];
            char *v = status_field(caps[i].field, buf, sizeof(buf));

            if (v != NULL)
                for (char *p = v; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
            kv_str(caps[i].key, v);
        }
        j_end_obj();
        return;
    }

    /*
     * No /proc: ask the kernel directly.  capget() gives the effective,
     * permitted and inheritable sets; the bounding and ambient sets can
     * only be queried one capability at a time via prctl().
     */
    memset(data, 0, sizeof(data));
    have_capget = syscall(SYS_capget, &hdr, data) == 0;
    {
        uint64_t bnd = 0;
        int cap, r = -1;

        for (cap = 0; cap < 64; cap++) {
            r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
            if (r < 0)
                break;          /* EINVAL: past the last known capability */
            if (r == 1)
                bnd |= 1ULL << cap;
        }
        if (cap > 0)
            emit_capmask("bounding", bnd);
        else
            kv_null("bounding");
    }
    if (have_capget) {
        emit_capmask("effective",
                     ((uint64_t)data[1].effective << 32) | data[0].effective);
        emit_capmask("permitted",
                     ((uint64_t)data[1].permitted << 32) | data[0].permitted);
        emit_capmask("inheritable",
                     ((uint64_t)data[1].inheritable << 32) | data[0].inheritable);
    } else {
        kv_null("effective");
        kv_null("permitted");
        kv_null("inheritable");
    }
    {
        uint64_t amb = 0;
        int cap, r = -1;

        for (cap = 0; cap < 64; cap++) {
            r = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0);
            if (r < 0)
                break;
            if (r == 1)
                amb |= 1ULL << cap;
        }
        if (cap > 0)
            emit_capmask("ambient", amb);
        else
            kv_null("ambient");
    }
    j_end_obj();
}

static void emit_rlimits(void)
{
    static const struct {
        const char *name;
        int res;
    } lims[] = {
        {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},
        {"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},
        {"fsize", RLIMIT_FSIZE},     {"data", RLIMIT_DATA},
        {"stack", RLIMIT_STACK},     {"rss", RLIMIT_RSS},
        {"memlock", RLIMIT_MEMLOCK}, {"as", RLIMIT_AS},
        {"locks", RLIMIT_LOCKS},     {"sigpending", RLIMIT_SIGPENDING},
        {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
        {"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},
    };

    j_key("rlimits");
    j_obj();
    for (size_t i = 0; i < sizeof(lims) / sizeof(lims[0]); i++) {
        struct rlimit rl;

        j_key(lims[i].name);
        if (getrlimit(lims[i].res, &rl) != 0) {
            j_null();
            continue;
        }
        j_arr();
        j_int(rl.rlim_cur == RLIM_INFINITY ? -1 : (long long)rl.rlim_cur);
        j_int(rl.rlim_max == RLIM_INFINITY ? -1 : (long long)rl.rlim_max);
        j_end_arr();
    }
    j_end_obj();
}

static void emit_ns(void)
{
    static const char *const names[] = {
        "cgroup", "ipc", "mnt", "net", "pid", "pid_for_children",
        "time", "time_for_children", "user", "uts",
    };

    j_key("ns");
    j_obj();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[64], target[128];

        snprintf(path, sizeof(path), "/proc/self/ns/%s", names[i]);
        kv_str(names[i], readlink_str(path, target, sizeof(target)));
    }
    j_end_obj();
}

static void emit_groups(void)
{
    int n = getgroups(0, NULL);
    gid_t *gids;

    j_key("groups");
    if (n < 0 || (gids = calloc((size_t)n + 1, sizeof(gid_t))) == NULL) {
        j_null();
        return;
    }
    n = getgroups(n, gids);
    if (n < 0) {
        j_null();
    } else {
        j_arr();
        for (int i = 0; i < n; i++)
            j_int(gids[i]);
        j_end_arr();
    }
    free(gids);
}

static void emit_cpus(void)
{
    j_key("cpus_allowed");
    /* The kernel rejects masks smaller than its nr_cpu_ids: grow until OK. */
    for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
        cpu_set_t *set = CPU_ALLOC(ncpu);
        size_t sz = CPU_ALLOC_SIZE(ncpu);

        if (set == NULL)
            break;
        CPU_ZERO_S(sz, set);
        if (sched_getaffinity(0, sz, set) == 0) {
            j_arr();
            for (int c = 0; c < ncpu; c++)
                if (CPU_ISSET_S(c, sz, set))
                    j_int(c);
            j_end_arr();
            CPU_FREE(set);
            return;
        }
        CPU_FREE(set);
        if (errno != EINVAL)
            break;
    }
    j_null();
}

static int cmd_facts(void)
{
    struct utsname uts;
    int have_uts;
    char buf[PATH_MAX];
    char *s;
    int r;

    j_obj();
    kv_int("pid", getpid());
    kv_int("ppid", getppid());
    /*
     * fds early, before we open anything (every file we open later is
     * closed again, but there is no reason to rely on that).
     */
    j_key("fds");
    emit_fds();

    proc_status = slurp("/proc/self/status", 0, NULL);
    have_uts = uname(&uts) == 0;

    kv_int("uid", getuid());
    kv_int("gid", getgid());
    kv_int("euid", geteuid());
    kv_int("egid", getegid());
    emit_groups();
    emit_umask();
    kv_str("cwd", getcwd(buf, sizeof(buf)));
    kv_str("hostname", have_uts ? uts.nodename : NULL);
    kv_str("domainname", have_uts ? uts.domainname : NULL);
    emit_caps();

    j_key("no_new_privs");
    r = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
    r < 0 ? j_null() : j_int(r);
    j_key("dumpable");
    r = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    r < 0 ? j_null() : j_int(r);

    /*
     * Not prctl(PR_GET_SECCOMP): under a filter that kills on prctl it
     * would take the probe down with it.
     */
    s = status_field("Seccomp", buf, sizeof(buf));
    j_key("seccomp");
    s ? j_int(strtol(s, NULL, 10)) : j_null();

    emit_rlimits();

    j_key("oom_score_adj");
    s = slurp("/proc/self/oom_score_adj", 64, NULL);
    s ? j_int(strtol(s, NULL, 10)) : j_null();
    free(s);

    emit_ns();

    j_key("env");
    j_arr();
    for (char **e = environ; e && *e; e++)
        j_str(*e);
    j_end_arr();

    j_key("mountinfo");
    emit_file_lines("/proc/self/mountinfo");
    j_key("cgroup");
    emit_file_lines("/proc/self/cgroup");

    kv_int("personality", personality(0xffffffff));
    kv_str("uname_machine", have_uts ? uts.machine : NULL);

    j_key("sched_policy");
    r = sched_getscheduler(0);
    r < 0 ? j_null() : j_int(r);

    /* getpriority() may legitimately return -1: check errno instead. */
    j_key("nice");
    errno = 0;
    r = getpriority(PRIO_PROCESS, 0);
    (r == -1 && errno != 0) ? j_null() : j_int(r);

    emit_cpus();
    j_end_obj();

    free(proc_status);
    return j_finish();
}

/* ------------------------------------------------------------------------ */
/* Single-operation subcommands                                              */
/* ------------------------------------------------------------------------ */

static int cmd_open(const char *path, const char *mode)
{
    int flags, fd;

    if (strcmp(mode, "r") == 0)
        flags = O_RDONLY;
    else if (strcmp(mode, "w") == 0)
        flags = O_WRONLY;
    else if (strcmp(mode, "rw") == 0)
        flags = O_RDWR;
    else if (strcmp(mode, "rdonly-path") == 0)
        flags = O_RDONLY | O_PATH;  /* needs only search permission on dirs */
    else
        return -1;

    fd = open(path, flags | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return print_rc(fd < 0 ? -1 : 0);
}

static const char *file_type(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG:  return "file";
    case S_IFDIR:  return "dir";
    case S_IFLNK:  return "symlink";
    case S_IFCHR:  return "char";
    case S_IFBLK:  return "block";
    case S_IFIFO:  return "fifo";
    case S_IFSOCK: return "socket";
    default:       return "unknown";
    }
}

static int cmd_stat(const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0)
        return print_rc(-1);
    j_obj();
    kv_bool("ok", 1);
    kv_str("type", file_type(st.st_mode));
    kv_int("mode", st.st_mode & 07777);
    kv_int("uid", st.st_uid);
    kv_int("gid", st.st_gid);
    kv_int("size", (long long)st.st_size);
    kv_int("rdev_major", major(st.st_rdev));
    kv_int("rdev_minor", minor(st.st_rdev));
    kv_int("dev_major", major(st.st_dev));
    kv_int("dev_minor", minor(st.st_dev));
    kv_int("ino", (long long)st.st_ino);
    j_end_obj();
    return j_finish();
}

static int cmd_write(const char *path, const char *text)
{
    size_t len = strlen(text), off = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_CLOEXEC,
                  0644);

    if (fd < 0)
        return print_rc(-1);
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);

        if (w < 0) {
            int err = errno;

            if (err == EINTR)
                continue;
            close(fd);
            return print_result(0, err);
        }
        off += (size_t)w;
    }
    /* close() can report deferred write errors (e.g. on NFS or FUSE). */
    return print_rc(close(fd));
}

static int cmd_read(const char *path)
{
    size_t len;
    char *data = slurp(path, READ_LIMIT, &len);

    if (data == NULL)
        return print_rc(-1);
    j_obj();
    kv_bool("ok", 1);
    j_key("data");
    j_strn(data, len);
    j_end_obj();
    free(data);
    return j_finish();
}

static int cmd_mknod(const char *path, const char *kind, const char *smaj,
                     const char *smin)
{
    long maj, min;
    mode_t type;

    if (strcmp(kind, "c") == 0)
        type = S_IFCHR;
    else if (strcmp(kind, "b") == 0)
        type = S_IFBLK;
    else
        return -1;
    if (!parse_long(smaj, &maj) || !parse_long(smin, &min) || maj < 0 ||
        min < 0)
        return -1;
    return print_rc(mknod(path, type | 0600,
                          makedev((unsigned)maj, (unsigned)min)));
}

static int cmd_kill(const char *spid, const char *ssig)
{
    long pid, sig;

    if (!parse_long(spid, &pid) || !parse_long(ssig, &sig))
        return -1;
    return print_rc(kill((pid_t)pid, (int)sig));
}

/*
 * Perform one system call and report its outcome; used to check seccomp
 * profiles (which turn calls into specific errnos) and capabilities.
 * Always prints all three keys.
 */
static int cmd_syscall_errno(const char *name)
{
    long rc;
    int err = 0;

    errno = 0;
    if (strcmp(name, "getpid") == 0) {
        /* Raw syscall: make sure the kernel is really asked. */
        rc = syscall(SYS_getpid);
        err = errno;
    } else if (strcmp(name, "mkdir") == 0) {
        rc = mkdir("/tmp/probe-d", 0700);
        err = errno;
        if (rc == 0 && rmdir("/tmp/probe-d") != 0) {
            rc = -1;
            err = errno;
        }
    } else if (strcmp(name, "chmod") == 0) {
        struct stat st;

        rc = stat("/", &st);
        if (rc == 0)
            rc = chmod("/", st.st_mode & 07777);
        err = errno;
    } else if (strcmp(name, "unshare-user") == 0) {
        rc = unshare(CLONE_NEWUSER);
        err = errno;
    } else {
        return -1;
    }

    j_obj();
    kv_bool("ok", rc >= 0);
    if (rc >= 0) {
        kv_int("errno", 0);
        kv_null("error");
    } else {
        kv_int("errno", err);
        kv_str("error", strerror(err));
    }
    j_end_obj();
    return j_finish();
}

static int cmd_exec(char **argv)
{
    /* argv[0] is PATH: the new program sees it as its own argv[0]. */
    execv(argv[0], argv);
    print_rc(-1);
    return 127;
}

static int cmd_hold(const char *ssec)
{
    char *end;
    double sec = strtod(ssec, &end);
    struct timespec ts;

    if (end == ssec || *end != '\0' || sec < 0)
        return -1;
    j_obj();
    kv_bool("ok", 1);
    kv_int("pid", getpid());
    j_end_obj();
    if (j_finish() != 0)
        return 1;

    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)((sec - (double)ts.tv_sec) * 1e9);
    /* Signals with handlers are not installed, but SIGCONT/ptrace can EINTR. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* Allocate and touch MB mebibytes, one at a time: under a memory limit the
 * OOM killer ends it (SIGKILL, so the caller sees 137), else it reports. */
static int cmd_hog(const char *smb)
{
    char *end;
    long mb = strtol(smb, &end, 10);
    long i;

    if (end == smb || *end != '\0' || mb < 0)
        return -1;
    for (i = 0; i < mb; i++) {
        char *chunk = malloc(1 << 20);
        if (chunk == NULL)
            break;
        memset(chunk, 0x5a, 1 << 20);   /* touched, so really charged */
    }
    j_obj();
    kv_bool("ok", i == mb);
    kv_int("mb", i);
    j_end_obj();
    return j_finish();
}

/* Fork up to N children that sleep, until fork fails (pids.max reached):
 * reports how many it got and fork's errno, then kills and reaps them. */
static int cmd_forkbomb(const char *sn)
{
    char *end;
    long n = strtol(sn, &end, 10);
    long got = 0;
    int err = 0;
    pid_t *kids;

    if (end == sn || *end != '\0' || n < 0)
        return -1;
    kids = calloc((size_t)n + 1, sizeof(pid_t));
    if (kids == NULL)
        return 1;
    for (got = 0; got < n; got++) {
        pid_t pid = fork();
        if (pid < 0) {
            err = errno;
            break;
        }
        if (pid == 0) {
            pause();
            _exit(0);
        }
        kids[got] = pid;
    }
    for (long i = 0; i < got; i++)
        kill(kids[i], SIGKILL);
    for (long i = 0; i < got; i++)
        waitpid(kids[i], NULL, 0);
    j_obj();
    kv_int("forked", got);
    j_key("errno");
    if (err)
        j_str(strerrorname_np(err) ? strerrorname_np(err) : "?");
    else
        j_null();
    j_end_obj();
    return j_finish();
}

/* The CPUs this process may run on (sched_getaffinity), as a list. */
static int cmd_affinity(void)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return print_rc(-1);
    j_obj();
    j_key("cpus");
    j_arr();
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            j_int(c);
    j_end_arr();
    j_end_obj();
    return j_finish();
}

/* CLOCK_MONOTONIC and CLOCK_BOOTTIME in seconds (time namespace offsets show here). */
static int cmd_clock(void)
{
    struct timespec mono, boot;

    if (clock_gettime(CLOCK_MONOTONIC, &mono) != 0 || clock_gettime(CLOCK_BOOTTIME, &boot) != 0)
        return print_rc(-1);
    j_obj();
    kv_int("monotonic", (long long)mono.tv_sec);
    kv_int("boottime", (long long)boot.tv_sec);
    j_end_obj();
    return j_finish();
}

/* sched_getattr(2) of this process (the kernel's struct sched_attr, version 1). */
static int cmd_sched(void)
{
    struct {
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime, deadline, period;
        uint32_t util_min, util_max;
    } attr;

    memset(&attr, 0, sizeof(attr));
    if (syscall(SYS_sched_getattr, 0, &attr, sizeof(attr), 0) != 0)
        return print_rc(-1);
    j_obj();
    kv_int("policy", attr.policy);
    kv_int("flags", (long long)attr.flags);
    kv_int("nice", attr.nice);
    kv_int("priority", attr.priority);
    kv_int("runtime", (long long)attr.runtime);
    kv_int("deadline", (long long)attr.deadline);
    kv_int("period", (long long)attr.period);
    j_end_obj();
    return j_finish();
}

/* ioprio_get(IOPRIO_WHO_PROCESS, 0): class and level. */
static int cmd_ioprio(void)
{
    long r = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);

    if (r < 0)
        return print_rc(-1);
    j_obj();
    kv_int("class", (r >> 13) & 0x7);
    kv_int("priority", r & 0x1fff);
    j_end_obj();
    return j_finish();
}

/* get_mempolicy(2) of this process: mode (with mode flags) and the node mask's first word. */
static int cmd_mempolicy(void)
{
    int mode = 0;
    unsigned long nodes[16];

    memset(nodes, 0, sizeof(nodes));
    if (syscall(SYS_get_mempolicy, &mode, nodes, sizeof(nodes) * 8, NULL, 0) != 0)
        return print_rc(-1);
    j_obj();
    kv_int("mode", mode & 0xff);
    kv_int("mode_flags", mode & ~0xff);
    kv_int("nodes", (long long)nodes[0]);
    j_end_obj();
    return j_finish();
}

/* Burn CPU for SECONDS of wall time; reports the CPU time it got, in ms. */
static int cmd_spin(const char *ssec)
{
    char *end;
    double sec = strtod(ssec, &end);
    struct timespec start, now, cpu;
    volatile unsigned long x = 0;

    if (end == ssec || *end != '\0' || sec < 0)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        for (int i = 0; i < 100000; i++)
            x++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < sec);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    j_obj();
    kv_bool("ok", 1);
    kv_int("cpu_ms", (long long)cpu.tv_sec * 1000 + cpu.tv_nsec / 1000000);
    j_end_obj();
    return j_finish();
}

/* sd_notify(3) by hand: send MESSAGE as one datagram to $NOTIFY_SOCKET. */
static int cmd_notify(const char *message)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr;
    int fd, rc;

    if (path == NULL || strlen(path) >= sizeof(addr.sun_path))
        return print_rc(-1);
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return print_rc(-1);
    rc = (int)sendto(fd, message, strlen(message), 0, (struct sockaddr *)&addr, sizeof(addr));
    close(fd);
    return print_rc(rc < 0 ? -1 : 0);
}

/* ------------------------------------------------------------------------ */

static void usage(void)
{
    fputs("usage: probe facts\n"
          "       probe open PATH r|w|rw|rdonly-path\n"
          "       probe stat PATH\n"
          "       probe write PATH TEXT\n"
          "       probe read PATH\n"
          "       probe mknod PATH c|b MAJOR MINOR\n"
          "       probe mount SRC TARGET FSTYPE\n"
          "       probe sethostname NAME\n"
          "       probe kill PID SIG\n"
          "       probe syscall-errno getpid|mkdir|chmod|unshare-user\n"
          "       probe exec PATH [ARGS...]\n"
          "       probe hold SECONDS\n"
          "       probe hog MEBIBYTES\n"
          "       probe forkbomb MAX\n"
          "       probe affinity\n"
          "       probe spin SECONDS\n"
          "       probe clock | sched | ioprio | mempolicy\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    int nargs = argc - 2;   /* arguments after the subcommand */
    int rc = -1;            /* -1: bad usage */

    if (strcmp(cmd, "facts") == 0 && nargs == 0)
        rc = cmd_facts();
    else if (strcmp(cmd, "open") == 0 && nargs == 2)
        rc = cmd_open(argv[2], argv[3]);
    else if (strcmp(cmd, "stat") == 0 && nargs == 1)
        rc = cmd_stat(argv[2]);
    else if (strcmp(cmd, "write") == 0 && nargs == 2)
        rc = cmd_write(argv[2], argv[3]);
    else if (strcmp(cmd, "read") == 0 && nargs == 1)
        rc = cmd_read(argv[2]);
    else if (strcmp(cmd, "mknod") == 0 && nargs == 4)
        rc = cmd_mknod(argv[2], argv[3], argv[4], argv[5]);
    else if (strcmp(cmd, "mount") == 0 && nargs == 3)
        rc = print_rc(mount(argv[2], argv[3], argv[4], 0, NULL));
    else if (strcmp(cmd, "sethostname") == 0 && nargs == 1)
        rc = print_rc(sethostname(argv[2], strlen(argv[2])));
    else if (strcmp(cmd, "kill") == 0 && nargs == 2)
        rc = cmd_kill(argv[2], argv[3]);
    else if (strcmp(cmd, "syscall-errno") == 0 && nargs == 1)
        rc = cmd_syscall_errno(argv[2]);
    else if (strcmp(cmd, "exec") == 0 && nargs >= 1)
        rc = cmd_exec(argv + 2);
    else if (strcmp(cmd, "hold") == 0 && nargs == 1)
        rc = cmd_hold(argv[2]);
    else if (strcmp(cmd, "hog") == 0 && nargs == 1)
        rc = cmd_hog(argv[2]);
    else if (strcmp(cmd, "forkbomb") == 0 && nargs == 1)
        rc = cmd_forkbomb(argv[2]);
    else if (strcmp(cmd, "affinity") == 0 && nargs == 0)
        rc = cmd_affinity();
    else if (strcmp(cmd, "spin") == 0 && nargs == 1)
        rc = cmd_spin(argv[2]);
    else if (strcmp(cmd, "notify") == 0 && nargs == 1)
        rc = cmd_notify(argv[2]);
    else if (strcmp(cmd, "clock") == 0 && nargs == 0)
        rc = cmd_clock();
    else if (strcmp(cmd, "sched") == 0 && nargs == 0)
        rc = cmd_sched();
    else if (strcmp(cmd, "ioprio") == 0 && nargs == 0)
        rc = cmd_ioprio();
    else if (strcmp(cmd, "mempolicy") == 0 && nargs == 0)
        rc = cmd_mempolicy();

    if (rc < 0) {
        usage();
        return 2;
    }
    return rc;
}
