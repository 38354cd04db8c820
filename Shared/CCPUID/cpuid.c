// CPUID and XGETBV, read once per call: which vector instructions this CPU
// has and the operating system enables. Compiled for the baseline target, so
// it runs on any CPU.
#include "CCPUID.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

unsigned chorus_cpu_features(void) {
    unsigned a, b, c, d, out = CHORUS_CPU_X86_64;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return out;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return out;
    unsigned long long xcr0 = xgetbv0();
    int ymm = (xcr0 & 0x6) == 0x6;      // XMM and YMM state
    int zmm = (xcr0 & 0xE6) == 0xE6;    // and opmask, ZMM_Hi256, Hi16_ZMM
    if (!ymm) return out;
    if ((c >> 12) & 1) out |= CHORUS_CPU_FMA;
    if ((c >> 29) & 1) out |= CHORUS_CPU_F16C;
    unsigned max = __get_cpuid_max(0, 0);
    if (max < 7) return out;
    __cpuid_count(7, 0, a, b, c, d);
    if ((b >> 5) & 1) out |= CHORUS_CPU_AVX2;
    if ((b >> 8) & 1) out |= CHORUS_CPU_BMI2;
    if (zmm) {
        if ((b >> 16) & 1) out |= CHORUS_CPU_AVX512F;
        if ((b >> 17) & 1) out |= CHORUS_CPU_AVX512DQ;
        if ((b >> 28) & 1) out |= CHORUS_CPU_AVX512CD;
        if ((b >> 30) & 1) out |= CHORUS_CPU_AVX512BW;
        if ((b >> 31) & 1) out |= CHORUS_CPU_AVX512VL;
        if ((c >> 11) & 1) out |= CHORUS_CPU_AVX512VNNI;
    }
    unsigned subleaves = a;
    if (subleaves >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 4) & 1) out |= CHORUS_CPU_AVXVNNI;
    }
    return out;
}
#else
unsigned chorus_cpu_features(void) { return 0; }
#endif
