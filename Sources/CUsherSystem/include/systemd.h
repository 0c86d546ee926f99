#ifndef C_USHER_SYSTEMD_H
#define C_USHER_SYSTEMD_H

/// sd_notify(0, state): a status message to systemd when NOTIFY_SOCKET is set; > 0 when sent, 0 when not under
/// systemd, < 0 on error.
int c_usher_sd_notify(const char *state);

/// sd_watchdog_enabled(0, ...): > 0 and the interval in microseconds when the unit asks for watchdog pings.
int c_usher_sd_watchdog(unsigned long long *usec);

#endif
