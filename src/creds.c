/*
 * creds.c — where the password comes from (the second half of opts.h).
 *
 * Sources, first match wins: passcmd, passfile, $IMAPCALFS_PASSWORD, the
 * config file, the terminal. The password never passes through argv or a
 * child's environment, and is wiped from memory when freed.
 */
#include "opts.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define PASSWORD_MAX 8192
#define ENV_PASSWORD "IMAPCALFS_PASSWORD"

extern char **environ;

/* Reads up to the first newline (or EOF) from fd into a malloc'd string. */
static char *read_first_line(int fd, int *truncated)
{
    char *buf = malloc(PASSWORD_MAX + 1);
    size_t len = 0;
    ssize_t n;

    *truncated = 0;
    if (buf == NULL)
        return NULL;
    while (len < PASSWORD_MAX) {
        n = read(fd, buf + len, PASSWORD_MAX - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (memchr(buf + len, '\n', (size_t)n)) {
            len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    if (len == PASSWORD_MAX && memchr(buf, '\n', len) == NULL)
        *truncated = 1;
    buf[len] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf;
}

static char *from_passfile(const char *path, char *err, size_t errlen)
{
    struct stat st;
    char *pw;
    int fd, truncated;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "passfile %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "passfile %s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "passfile %s is accessible by group or others; fix it with: chmod 600 %s", path,
                 path);
        close(fd);
        return NULL;
    }
    pw = read_first_line(fd, &truncated);
    close(fd);
    if (pw && pw[0] == '\0') {
        snprintf(err, errlen, "passfile %s: the first line is empty", path);
        opts_password_free(pw);
        return NULL;
    }
    return pw;
}

/* Reads fd to its end, wiping what it read. */
static void drain(int fd)
{
    char buf[512];
    ssize_t n;

    while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        ;
    explicit_bzero(buf, sizeof buf);
}

/*
 * Runs "sh -c CMD" with stdout on a pipe, like mbsync's PassCmd. The child
 * gets no IMAPCALFS_PASSWORD in its environment.
 */
static char *from_passcmd(const char *cmd, char *err, size_t errlen)
{
    int pipefd[2], status, truncated;
    pid_t pid;
    char *pw;

    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "passcmd: pipe: %s", strerror(errno));
        return NULL;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "passcmd: fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return NULL;
    }
    if (pid == 0) {
        dup2(pipefd[1], STDOUT_FILENO);
        unsetenv(ENV_PASSWORD); /* already gone from ours; never to a child */
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    pw = read_first_line(pipefd[0], &truncated);
    /*
     * Read what follows the first line too (pass(1) prints metadata after
     * the password): closing the pipe early would kill the command with
     * SIGPIPE and fail the mount at random.
     */
    drain(pipefd[0]);
    close(pipefd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, errlen, "passcmd failed (exit status %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        opts_password_free(pw);
        return NULL;
    }
    if (pw && pw[0] == '\0') {
        snprintf(err, errlen, "passcmd printed no password");
        opts_password_free(pw);
        return NULL;
    }
    return pw;
}

/* Prompts on the controlling terminal with echo off. */
static char *from_terminal(const struct opts *o, char *err, size_t errlen)
{
    struct termios old, quiet;
    int fd, truncated, restore = 0;
    char *pw;

    fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen,
                 "no password for %s: use -o passfile=FILE, -o passcmd=CMD, IMAPCALFS_PASSWORD "
                 "or a password in the config file (no terminal to ask on)",
                 opts_account(o));
        return NULL;
    }
    /* Echo goes off before the prompt shows: nothing typed after it is echoed. */
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    dprintf(fd, "Password for %s: ", opts_account(o));
    pw = read_first_line(fd, &truncated);
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &old);
    else
        dprintf(fd, "\n");
    close(fd);
    if (pw && pw[0] == '\0') {
        snprintf(err, errlen, "no password entered for %s", opts_account(o));
        opts_password_free(pw);
        return NULL;
    }
    if (pw == NULL)
        snprintf(err, errlen, "out of memory");
    return pw;
}

/*
 * Takes $IMAPCALFS_PASSWORD out of the environment: a copy (or NULL when it
 * is not set), then the value overwritten where it lies. unsetenv() alone
 * only drops the pointer; the bytes would stay in the initial environment
 * block, which /proc/PID/environ shows to the user's other processes.
 */
static char *take_env_password(int *oom)
{
    const size_t n = strlen(ENV_PASSWORD);
    const char *value = getenv(ENV_PASSWORD);
    char *copy = NULL;

    *oom = 0;
    if (value && (copy = strdup(value)) == NULL)
        *oom = 1;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, ENV_PASSWORD, n) == 0 && (*e)[n] == '=')
            explicit_bzero(*e + n + 1, strlen(*e + n + 1));
    unsetenv(ENV_PASSWORD);
    return copy;
}

char *opts_password(const struct opts *o, char *err, size_t errlen)
{
    int oom;
    /* Taken whichever source wins: it must not linger for children or /proc. */
    char *env = take_env_password(&oom);
    char *pw;

    if (oom) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (o->passcmd)
        pw = from_passcmd(o->passcmd, err, errlen);
    else if (o->passfile)
        pw = from_passfile(o->passfile, err, errlen);
    else if (env) {
        pw = env;
        env = NULL;
    } else if (o->config_password) {
        if ((pw = strdup(o->config_password)) == NULL)
            snprintf(err, errlen, "out of memory");
    } else
        pw = from_terminal(o, err, errlen);
    opts_password_free(env);
    return pw;
}

void opts_password_free(char *password)
{
    if (password == NULL)
        return;
    explicit_bzero(password, strlen(password));
    free(password);
}
