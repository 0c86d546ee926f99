#ifndef C_USHER_SYSTEM_H
#define C_USHER_SYSTEM_H

/// The number of CPUs in this process's affinity mask (sched_getaffinity), or -1 on error.
int c_usher_affinity_cpu_count(void);

/// Opens `path` relative to directory `dirfd` without ever resolving outside it: `..` above it, absolute
/// symlinks and symlinks leading out fail with EXDEV (openat2 with RESOLVE_BENEATH; Linux 5.6+, else ENOSYS).
/// Returns the descriptor (close-on-exec) or -1 with errno set.
int c_usher_open_beneath(int dirfd, const char *path, int flags);

/// The modification time of `path` in nanoseconds since the epoch, or -1 if it cannot be read.
long long c_usher_mtime_ns(const char *path);

/// Opens a directory as a path-only descriptor (O_PATH), usable as the base of c_usher_open_beneath.
int c_usher_open_directory(const char *path);

/// Returns freed heap memory to the system (glibc's malloc_trim(0)); after a large, short-lived allocation.
void c_usher_release_free_memory(void);

#include "compress.h"
#include "dial.h"
#include "dns.h"
#include "encoder.h"
#include "markdown.h"
#include "passwords.h"
#include "signals.h"
#include "systemd.h"
#include "tls.h"

#endif
