/*
 * imapcalfs.c — the program: options, the mount-time check, the FUSE loop.
 *
 * Everything that can fail for a reason the user must fix (options,
 * password, server, certificate, login, mountpoint) fails here, before
 * daemonizing, with one line on stderr and exit status 1. After that the
 * process serves the mount until it is unmounted or gets SIGTERM/SIGINT,
 * and then exits 0.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache.h"
#include "cal.h"
#include "fsops.h"
#include "log.h"
#include "opts.h"
#include "source.h"
#include "store.h"
#include "version.h"

/*
 * Tells systemd (Type=notify) about the service's state: one datagram to
 * $NOTIFY_SOCKET (the sd_notify(3) protocol, without libsystemd). "READY=1"
 * once the mount is live, "STOPPING=1" when it is being taken down.
 */
static void notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, path, strlen(path));
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
        log_warn("cannot notify systemd (%s): %s", msg, strerror(errno));
    close(fd);
}

/*
 * The persistent cache: cache_dir= (made absolute now, since the daemon
 * changes its directory to /) or the XDG default for the account.
 */
static struct cache *open_cache(const struct opts *o, char *err, size_t errlen)
{
    char *dir = NULL, cwd[4096];
    struct cache *c;

    if (o->cache_dir && o->cache_dir[0] == '/')
        dir = strdup(o->cache_dir);
    else if (o->cache_dir && getcwd(cwd, sizeof cwd))
        dir = asprintf(&dir, "%s/%s", cwd, o->cache_dir) < 0 ? NULL : dir;
    else if (o->cache_dir == NULL)
        dir = cache_default_dir(opts_account(o));
    if (dir == NULL) {
        snprintf(err, errlen, "cannot work out the cache directory");
        return NULL;
    }
    c = cache_open(dir, err, errlen);
    if (c)
        log_debug("cache in %s", dir);
    free(dir);
    return c;
}

/* libfuse's handlers for the signals that end the daemon. */
static struct sigaction fuse_exit_handlers[NSIG];

/*
 * SIGTERM/SIGINT/SIGHUP: cut the network sessions first, so requests that
 * wait on a slow server end now and the FUSE loop can stop, then let
 * libfuse's handler end the loop. Async-signal-safe.
 */
static void on_exit_signal(int sig)
{
    source_interrupt_all();
    if (fuse_exit_handlers[sig].sa_handler != SIG_DFL &&
        fuse_exit_handlers[sig].sa_handler != SIG_IGN)
        fuse_exit_handlers[sig].sa_handler(sig);
}

static void chain_exit_signals(void)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_exit_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], NULL, &fuse_exit_handlers[sigs[i]]) == 0)
            sigaction(sigs[i], &sa, NULL);
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "imapcalfs: %s\n", msg);
    return 1;
}

/* The FUSE loop: multi-threaded unless -s. Returns the loop's result. */
static int serve(struct fuse_session *se, const struct opts *o)
{
    struct fuse_loop_config *cfg;
    int rc;

    if (o->singlethread)
        return fuse_session_loop(se);
    if ((cfg = fuse_loop_cfg_create()) == NULL)
        return -ENOMEM;
    fuse_loop_cfg_set_max_threads(cfg, o->max_threads);
    /* max_idle_threads stays -1: libfuse (3.14) then never destroys idle
     * workers. With a limit, a worker that detaches itself while the loop
     * exits is leaked (LeakSanitizer: its struct and 32 KiB buffer), and
     * libfuse discourages it anyway (thread churn). */
    rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

static void print_version(void)
{
    printf("imapcalfs version %s\n", IMAPCALFS_VERSION);
    printf("FUSE library version %s\n", fuse_pkgversion());
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct opts o;
    struct source *src = NULL;
    struct store *store = NULL;
    struct cache *cache = NULL;
    struct fsops *fs = NULL;
    struct fsops_config fcfg = {0};
    struct fuse_session *se = NULL;
    char err[512], *password = NULL;
    int rc = 1, mounted = 0, handlers = 0;

    log_init("imapcalfs");
    /*
     * Many FUSE threads each get a malloc arena by default, and each keeps
     * what it freed: a bounded number keeps the resident size near what is
     * in use. Not too few: two syncs parsing at once on one arena fight for
     * its lock (with 2 arenas that happened in half the cold mounts at 10,000
     * messages: daemon CPU 1.3 -> 2.3 s); with 8 never, and the peak RSS is
     * the same.
     */
    mallopt(M_ARENA_MAX, 8);
    /* libetpan writes to sockets without MSG_NOSIGNAL (notes §0.8). */
    signal(SIGPIPE, SIG_IGN);
    if (opts_parse(&args, &o, err, sizeof err) != 0 ||
        fsops_parse_args(&args, &fcfg, err, sizeof err) != 0) {
        rc = usage_error(err);
        goto out;
    }
    if (o.show_help) {
        opts_print_help(argv[0]);
        printf("FUSE options:\n");
        fuse_cmdline_help();
        fsops_print_help();
        fuse_lowlevel_help();
        rc = 0;
        goto out;
    }
    if (o.show_version) {
        print_version();
        rc = 0;
        goto out;
    }
    log_set_debug(o.debug);
    cal_global_init();
    if (o.kind != OPTS_SRC_MAILDIR && (password = opts_password(&o, err, sizeof err)) == NULL) {
        rc = usage_error(err);
        goto out;
    }
    src = source_new(&o, password);
    opts_password_free(password);
    if (src == NULL) {
        rc = usage_error("out of memory");
        goto out;
    }
    if (source_check(src, err, sizeof err) != 0) {
        rc = usage_error(err);
        goto out;
    }
    if (!o.no_disk_cache && (cache = open_cache(&o, err, sizeof err)) == NULL) {
        rc = usage_error(err);
        goto out;
    }
    if ((store = store_new(src, &o, cache)) == NULL || (fs = fsops_new(store, &fcfg)) == NULL) {
        rc = usage_error("out of memory");
        goto out;
    }
    if ((se = fsops_session_new(fs, &args)) == NULL) {
        rc = usage_error("cannot set up FUSE (see the message above)");
        goto out;
    }
    if (fuse_session_mount(se, o.mountpoint) != 0) {
        snprintf(err, sizeof err, "cannot mount on %s", o.mountpoint);
        rc = usage_error(err);
        goto out;
    }
    mounted = 1;
    if (fuse_daemonize(o.foreground) != 0) {
        rc = usage_error("cannot daemonize");
        goto out;
    }
    if (!o.foreground)
        log_use_syslog();
    if (fuse_set_signal_handlers(se) != 0) {
        log_err("cannot set signal handlers");
        goto out;
    }
    handlers = 1;
    chain_exit_signals();
    log_info("%s mounted on %s", opts_account(&o), o.mountpoint);
    notify("READY=1");
    /* The loop returns the signal number after SIGTERM/SIGINT: a clean end. */
    rc = serve(se, &o) < 0 ? 1 : 0;
    fsops_stop(fs);
    notify("STOPPING=1");
    log_info("stopping: %s on %s", opts_account(&o), o.mountpoint);
out:
    if (handlers)
        fuse_remove_signal_handlers(se);
    if (mounted)
        fuse_session_unmount(se);
    if (se)
        fuse_session_destroy(se);
    /* The source first: its IDLE threads call into the store and fsops. */
    source_free(src);
    fsops_free(fs);
    store_free(store);
    cache_close(cache);
    fuse_opt_free_args(&args);
    opts_free(&o);
    return rc;
}
