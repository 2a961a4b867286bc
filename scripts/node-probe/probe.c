/*
 * The real node's test probe: stands in for an agent (or a gateway) in a pod, so that tests
 * can check what a pod can reach with packets. It answers any HTTP request with 200 "ok" on
 * ports 8080 (an agent's) and 8081 (the broker's), and ignores its arguments (the operator
 * starts agents with `agent`). The image also holds busybox, whose `nc` the tests run with
 * `kubectl exec` to try a connection from inside the pod.
 */
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = {INADDR_ANY}};
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0) return -1;
    return fd;
}

int main(void) {
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    struct pollfd fds[2] = {{.fd = listen_on(8080), .events = POLLIN}, {.fd = listen_on(8081), .events = POLLIN}};
    char request[4096];
    signal(SIGPIPE, SIG_IGN);
    if (fds[0].fd < 0 || fds[1].fd < 0) return 1;
    for (;;) {
        if (poll(fds, 2, -1) < 0) continue;
        for (int i = 0; i < 2; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            int conn = accept(fds[i].fd, 0, 0);
            if (conn < 0) continue;
            struct timeval wait = {.tv_sec = 2};
            setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
            (void)read(conn, request, sizeof request);
            (void)write(conn, answer, strlen(answer));
            close(conn);
        }
    }
}
