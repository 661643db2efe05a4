/*
 * floor.c - the lower bound for spawning a namespaced process.
 *
 * The cheapest way a container runtime can start /bin/true in fresh
 * namespaces and wait for it: clone3 (fork-like, no stack) with the requested
 * CLONE_NEW* flags; the parent writes setgroups/uid_map/gid_map for the user
 * namespace ("0 <euid> 1", as a runtime mapping the caller to root would),
 * then releases the child through a pipe; the child execs the program; the
 * parent waits for it.  No mounts, no pivot_root, no cgroup: everything a real
 * runtime adds on top is what the other contenders are compared against.
 *
 * It runs as a server so the harness can interleave it with the other
 * contenders without paying for this process's startup on every sample:
 * every line read on stdin runs ONE spawn and answers one line on stdout,
 * the elapsed wall time in nanoseconds (CLOCK_MONOTONIC, from just before
 * clone to just after the wait).  EOF on stdin ends the server.
 *
 * usage: floor [-n COUNT] [PROGRAM] NS[,NS...]   (NS: user mount pid uts ipc
 *        net cgroup time, or "none")
 *   -n COUNT: run COUNT spawns at once, one time per line, then exit
 *   PROGRAM defaults to /bin/true (given as an absolute path: execve only).
 * Build: cc -O2 -o floor floor.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static const char *program = "/bin/true";

/* Map one comma-separated namespace name list to CLONE_NEW* flags. */
static int parse_namespaces(const char *spec, uint64_t *flags)
{
	static const struct { const char *name; uint64_t flag; } table[] = {
		{"user", CLONE_NEWUSER}, {"mount", CLONE_NEWNS},
		{"pid", CLONE_NEWPID},   {"uts", CLONE_NEWUTS},
		{"ipc", CLONE_NEWIPC},   {"net", CLONE_NEWNET},
		{"cgroup", CLONE_NEWCGROUP}, {"time", CLONE_NEWTIME},
	};
	char *copy = strdup(spec), *save = NULL, *tok;
	*flags = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t i;
		if (strcmp(tok, "none") == 0)
			continue;
		for (i = 0; i < sizeof(table) / sizeof(table[0]); i++)
			if (strcmp(tok, table[i].name) == 0)
				break;
		if (i == sizeof(table) / sizeof(table[0])) {
			fprintf(stderr, "floor: unknown namespace '%s'\n", tok);
			free(copy);
			return -1;
		}
		*flags |= table[i].flag;
	}
	free(copy);
	return 0;
}

/* Write a whole string to /proc/PID/NAME. */
static int write_proc(pid_t pid, const char *name, const char *text)
{
	char path[64];
	int fd, ok;
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok ? 0 : -1;
}

/* Fork-like clone3 (no new stack); falls back to clone when clone3 is missing. */
static pid_t clone_child(uint64_t flags)
{
	struct clone_args args;
	pid_t pid;
	memset(&args, 0, sizeof(args));
	args.flags = flags;
	args.exit_signal = SIGCHLD;
	pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0 && errno == ENOSYS && !(flags & CLONE_NEWTIME))
		pid = syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
	return pid;
}

/* Child side: wait for the parent's go (EOF on the pipe), then exec. */
static void child(int sync_fd)
{
	char c;
	char *const argv[] = {(char *)program, NULL};
	char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
	while (read(sync_fd, &c, 1) < 0 && errno == EINTR)
		;
	execve(program, argv, envp);
	_exit(127);
}

/* Parent side of the user namespace setup: deny setgroups, map euid/egid to 0. */
static int map_ids(pid_t pid)
{
	char map[64];
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)geteuid());
	if (write_proc(pid, "uid_map", map) < 0)
		return -1;
	if (write_proc(pid, "setgroups", "deny") < 0)
		return -1;
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)getegid());
	return write_proc(pid, "gid_map", map);
}

/* One spawn: clone, map, release, wait.  Returns elapsed ns, or -1. */
static long long spawn_once(uint64_t flags)
{
	struct timespec t0, t1;
	int pipefd[2], status;
	pid_t pid;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -1;
	pid = clone_child(flags);
	if (pid < 0) {
		perror("floor: clone");
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	if (pid == 0) {
		close(pipefd[1]);
		child(pipefd[0]);
	}
	close(pipefd[0]);
	if ((flags & CLONE_NEWUSER) && map_ids(pid) < 0)
		perror("floor: id map");
	close(pipefd[1]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "floor: child status 0x%x\n", status);
		return -1;
	}
	return (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
}

int main(int argc, char **argv)
{
	uint64_t flags;
	long count = -1;
	char line[256];
	int i = 1;

	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		count = atol(argv[2]);
		i = 3;
	}
	if (argc - i == 2)
		program = argv[i++];
	if (argc - i != 1 || parse_namespaces(argv[i], &flags) < 0) {
		fprintf(stderr, "usage: floor [-n COUNT] [PROGRAM] NS[,NS...]|none\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (count >= 0) {
		for (long k = 0; k < count; k++)
			printf("%lld\n", spawn_once(flags));
		return 0;
	}
	while (fgets(line, sizeof(line), stdin))
		printf("%lld\n", spawn_once(flags));
	return 0;
}
