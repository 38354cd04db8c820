// The prefetch hint is a static inline function in include/CPrefetch.h.
#include "CPrefetch.h"
