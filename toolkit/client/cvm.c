/* cvm's command-line client: what /usr/local/bin/cvm runs.
 *
 * A Python interpreter takes ~9 ms to start, which is most of a short `cvm` command
 * that cvm netd serves. This client does not start one. It sends its command line to
 * cvm netd, which runs it with the Python CLI it keeps loaded (cvm.service.op_cli).
 * The client then prints what the command printed and exits with its code. Mercurial's
 * chg does the same for hg.
 *
 * Whenever netd does not run the command, the client execs the Python CLI, the `cvm`
 * beside this binary, which runs it itself. That happens with no netd, with a netd of
 * other code, with CVM_NO_DAEMON set, and for commands that must run in the caller's
 * process (cvm.launcher.forwardable).
 *
 * The request is a cvm.wire frame: "CVM1 <length>\n" and marshal data,
 *     {"op": "cli", "reply": "raw",
 *      "args": {"argv": [bytes, ...], "tty": bool, "code": "installed"}}
 * and netd answers with the raw reply that asks for (cvm.wire.encode_output):
 *     "CVM1 RAN <exit> <stdout length> <stderr length>\n" <stdout> <stderr>
 *     "CVM1 NOTRUN\n"
 * A netd older than this protocol refuses the "installed" stamp and answers with a
 * marshal frame, so nothing ran, and the Python CLI runs the command.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_STATE_DIR "/var/lib/cvm"
#define NETD_SOCKET "netd.sock"
#define MAX_HEADER 64

struct buffer {
    char *data;
    size_t length, size;
};

static void append(struct buffer *buffer, const void *bytes, size_t count)
{
    if (buffer->length + count > buffer->size) {
        buffer->size = 2 * (buffer->length + count);
        buffer->data = realloc(buffer->data, buffer->size);
        if (buffer->data == NULL) {
            fputs("cvm: out of memory\n", stderr);
            exit(1);
        }
    }
    memcpy(buffer->data + buffer->length, bytes, count);
    buffer->length += count;
}

/* marshal's little-endian 32-bit length */
static void append_length(struct buffer *buffer, size_t value)
{
    unsigned char bytes[4] = {value, value >> 8, value >> 16, value >> 24};
    append(buffer, bytes, 4);
}

/* a marshal str ('u') or bytes ('s') */
static void append_string(struct buffer *buffer, char type, const char *text)
{
    append(buffer, &type, 1);
    append_length(buffer, strlen(text));
    append(buffer, text, strlen(text));
}

static void append_text(struct buffer *buffer, const char *text)
{
    append_string(buffer, 'u', text);
}

static struct buffer request_frame(int argc, char **argv)
{
    struct buffer body = {0}, frame = {0};
    char header[MAX_HEADER];
    int i;

    append(&body, "{", 1);
    append_text(&body, "op");
    append_text(&body, "cli");
    append_text(&body, "reply");
    append_text(&body, "raw");
    append_text(&body, "args");
    append(&body, "{", 1);
    append_text(&body, "argv");
    append(&body, "[", 1);
    append_length(&body, argc - 1);
    for (i = 1; i < argc; i++)
        append_string(&body, 's', argv[i]); /* bytes: netd decodes them as Python would */
    append_text(&body, "tty");
    append(&body, isatty(STDOUT_FILENO) ? "T" : "F", 1);
    append_text(&body, "code");
    append_text(&body, "installed");
    append(&body, "00", 2); /* the ends of both dicts */

    append(&frame, header, snprintf(header, sizeof header, "CVM1 %zu\n", body.length));
    append(&frame, body.data, body.length);
    free(body.data);
    return frame;
}

/* A socket connected to cvm netd, or -1 when none listens. */
static int connect_netd(void)
{
    const char *state_dir = getenv("CVM_STATE_DIR");
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    int sock, length;

    if (state_dir == NULL || *state_dir == '\0') /* as cvm.paths.default_root */
        state_dir = DEFAULT_STATE_DIR;
    length = snprintf(address.sun_path, sizeof address.sun_path, "%s/%s", state_dir,
                      NETD_SOCKET);
    if (length < 0 || (size_t)length >= sizeof address.sun_path)
        return -1;
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    if (connect(sock, (struct sockaddr *)&address, sizeof address) != 0) {
        close(sock);
        return -1;
    }
    return sock;
}

static int write_all(int fd, const char *data, size_t count)
{
    while (count > 0) {
        ssize_t written = write(fd, data, count);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        data += written;
        count -= written;
    }
    return 0;
}

static int read_all(int fd, char *data, size_t count)
{
    while (count > 0) {
        ssize_t got = read(fd, data, count);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        data += got;
        count -= got;
    }
    return 0;
}

/* Execs the Python CLI: the `cvm` in this binary's directory (symlinks resolved). */
static void run_in_python(char **argv)
{
    char path[PATH_MAX] = "";
    ssize_t length = readlink("/proc/self/exe", path, sizeof path - sizeof "/cvm");
    char *slash;

    if (length > 0) {
        path[length] = '\0';
        slash = strrchr(path, '/');
        strcpy(slash != NULL ? slash : path, "/cvm");
        signal(SIGPIPE, SIG_DFL);
        execv(path, argv);
    }
    fprintf(stderr, "cvm: cannot run the Python CLI %s: %s\n", path, strerror(errno));
    exit(127);
}

static void lost_netd(const char *command)
{
    /* It may have run: running it again in Python could do it twice. */
    fprintf(stderr, "cvm: lost cvm netd while it ran `cvm %s`; see `cvm ls` and the netd "
            "log\n", command);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *no_daemon = getenv("CVM_NO_DAEMON");
    const char *command = argc > 1 ? argv[1] : "";
    char header[MAX_HEADER];
    size_t used = 0, out_length, err_length;
    struct buffer request;
    int sock, code, consumed = 0;
    char *output;

    /* A netd that closes the socket, or a reader that leaves (`cvm ls | head -1`):
     * the client goes on, and exits as the command did. */
    signal(SIGPIPE, SIG_IGN);
    if (no_daemon != NULL && *no_daemon != '\0')
        run_in_python(argv);
    sock = connect_netd();
    if (sock < 0)
        run_in_python(argv);
    request = request_frame(argc, argv);
    if (write_all(sock, request.data, request.length) != 0)
        run_in_python(argv); /* it closed before reading a whole request: nothing ran */

    while (used == 0 || header[used - 1] != '\n') {
        if (used == sizeof header - 1)
            run_in_python(argv); /* not a cvm frame: an older netd, and it ran nothing */
        if (read_all(sock, header + used, 1) != 0)
            lost_netd(command);
        used++;
    }
    header[used] = '\0';
    if (strcmp(header, "CVM1 NOTRUN\n") == 0)
        run_in_python(argv);
    if (sscanf(header, "CVM1 RAN %d %zu %zu\n%n", &code, &out_length, &err_length,
               &consumed) != 3 || (size_t)consumed != used)
        run_in_python(argv);
    output = malloc(out_length + err_length + 1);
    if (output == NULL) {
        fputs("cvm: out of memory\n", stderr);
        return 1;
    }
    if (read_all(sock, output, out_length + err_length) != 0)
        lost_netd(command);
    write_all(STDOUT_FILENO, output, out_length);
    write_all(STDERR_FILENO, output + out_length, err_length);
    return code;
}
