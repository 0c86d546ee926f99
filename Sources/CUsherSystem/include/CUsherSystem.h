#ifndef C_USHER_SYSTEM_H
#define C_USHER_SYSTEM_H

/// The number of CPUs in this process's affinity mask (sched_getaffinity), or -1 on error.
int c_usher_affinity_cpu_count(void);

#include "compress.h"
#include "encoder.h"
#include "signals.h"

#endif
