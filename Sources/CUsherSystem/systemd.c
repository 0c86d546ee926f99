// libsystemd behind plain functions, so its headers (which pull in the socket API) stay out of Swift's view.
#include <systemd/sd-daemon.h>

#include "systemd.h"

int c_usher_sd_notify(const char *state) { return sd_notify(0, state); }

int c_usher_sd_watchdog(unsigned long long *usec) {
    uint64_t value = 0;
    int r = sd_watchdog_enabled(0, &value);
    *usec = value;
    return r;
}
