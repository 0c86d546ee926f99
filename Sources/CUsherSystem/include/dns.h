#ifndef C_USHER_DNS_H
#define C_USHER_DNS_H

/// Sends one DNS query (class IN, record type `type`: 1 A, 28 AAAA, 33 SRV) for `name` and writes the raw
/// answer message into `answer`. `server` (an IPv4 or IPv6 literal, with `port`) replaces the system's
/// nameservers when not NULL. Returns the answer's length, or -1 (h_errno-style failure, including NXDOMAIN).
int c_usher_dns_query(const char *name, int type, const char *server, int port, unsigned char *answer, int anslen);

#endif
