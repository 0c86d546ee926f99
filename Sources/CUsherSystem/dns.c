#include "include/dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <string.h>

int c_usher_dns_query(const char *name, int type, const char *server, int port, unsigned char *answer, int anslen) {
    struct __res_state state;
    memset(&state, 0, sizeof(state));
    if (res_ninit(&state) != 0) return -1;
    if (server != NULL) {
        struct sockaddr_in v4;
        memset(&v4, 0, sizeof(v4));
        if (inet_pton(AF_INET, server, &v4.sin_addr) == 1) {
            v4.sin_family = AF_INET;
            v4.sin_port = htons((unsigned short)port);
            state.nsaddr_list[0] = v4;
            state.nscount = 1;
        } else {
            // IPv6 nameservers need the extension fields glibc keeps privately; only IPv4 overrides are supported.
            res_nclose(&state);
            return -2;
        }
    }
    int n = res_nquery(&state, name, ns_c_in, type, answer, anslen);
    res_nclose(&state);
    return n;
}
