#define _GNU_SOURCE
#include "include/dial.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

// Connects `fd` to `addr` within `timeout_ms` (non-blocking connect and poll), leaving it blocking.
static int connect_within(int fd, const struct sockaddr *addr, socklen_t len, int timeout_ms) {
    if (timeout_ms <= 0) {
        while (connect(fd, addr, len) != 0) {
            if (errno != EINTR) return -1;
        }
        return 0;
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, addr, len) != 0) {
        if (errno != EINPROGRESS) return -1;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r;
        do {
            r = poll(&p, 1, timeout_ms);
        } while (r < 0 && errno == EINTR);
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (r < 0) return -1;
        int err = 0;
        socklen_t elen = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err != 0) {
            errno = err;
            return -1;
        }
    }
    fcntl(fd, F_SETFL, flags);
    return 0;
}

int c_usher_dial(const char *network, const char *host, int port, int timeout_ms) {
    int unix_stream = strcmp(network, "unix") == 0;
    int unix_dgram = strcmp(network, "unixgram") == 0;
    if (unix_stream || unix_dgram) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        if (strlen(host) >= sizeof sun.sun_path) {
            errno = ENAMETOOLONG;
            return -1;
        }
        strcpy(sun.sun_path, host);
        int fd = socket(AF_UNIX, (unix_stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        if (connect_within(fd, (struct sockaddr *)&sun, sizeof sun, timeout_ms) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        return fd;
    }
    int dgram = strncmp(network, "udp", 3) == 0;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = dgram ? SOCK_DGRAM : SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    if (strcmp(network + (dgram ? 3 : 3), "4") == 0) hints.ai_family = AF_INET;
    if (strcmp(network + (dgram ? 3 : 3), "6") == 0) hints.ai_family = AF_INET6;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo *res = NULL;
    if (getaddrinfo(host[0] ? host : NULL, service, &hints, &res) != 0 || res == NULL) {
        errno = EHOSTUNREACH;
        return -1;
    }
    int last = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect_within(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        last = errno;
        close(fd);
    }
    freeaddrinfo(res);
    errno = last;
    return -1;
}
