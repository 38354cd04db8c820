#ifndef CHORUS_CPREFETCH_H
#define CHORUS_CPREFETCH_H

/// Asks the CPU to bring the cache line at `p` closer (a hint; never faults).
static inline void chorus_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif
