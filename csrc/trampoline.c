/* minirun's exec trampoline: the last program a container's init runs before the container's own.
 *
 * Why it exists: the init is a forked Python interpreter, so at the moment it execs the container's
 * program /proc/self/exe names the host's interpreter. A container binary that is a script starting
 * with "#!/proc/self/exe" would make the kernel run that host file inside the container, where it
 * could be reopened for writing (the runc CVE-2019-5736 class). minirun copies this program into a
 * sealed memfd and execs that instead; from here /proc/self/exe is an anonymous, write-sealed copy,
 * so the container can only ever reach this harmless file.
 *
 * Protocol: argv = [MAGIC, path, argv0, argv1, ...]; the environment passes through. Anything else
 * (in particular being run through a "#!/proc/self/exe" line) is refused, so it cannot loop. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAGIC "minirun-exec-trampoline"

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[0], MAGIC) != 0) {
        fputs("minirun-exec: refusing to run: not started by minirun\n", stderr);
        return 126;
    }
    execve(argv[1], &argv[2], environ);
    int err = errno;
    fprintf(stderr, "exec: \"%s\": %s\n", argv[2], strerror(err));
    return err == ENOENT ? 127 : 126;
}
