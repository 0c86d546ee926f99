#ifndef C_USHER_DIAL_H
#define C_USHER_DIAL_H

/// Connects a socket, as Go's net.DialTimeout does for `network` "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6",
/// "unix" (stream) or "unixgram". `host` is a name or address (the path for unix networks; port ignored), tried
/// in getaddrinfo's order. `timeout_ms` <= 0 waits as long as the kernel does. Returns a blocking, close-on-exec
/// descriptor, or -1 with errno set (EAI failures become EHOSTUNREACH).
int c_usher_dial(const char *network, const char *host, int port, int timeout_ms);

#endif
