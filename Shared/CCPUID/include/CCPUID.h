#ifndef CHORUS_CCPUID_H
#define CHORUS_CCPUID_H

/// The instruction sets the integer and float kernels can use, as bits of
/// chorus_cpu_features(). A bit is set only when the CPU has the instructions
/// and the operating system saves the registers they use (XGETBV).
enum {
    CHORUS_CPU_X86_64 = 1 << 0,
    CHORUS_CPU_AVX2 = 1 << 1,
    CHORUS_CPU_FMA = 1 << 2,
    CHORUS_CPU_F16C = 1 << 3,
    CHORUS_CPU_AVX512F = 1 << 4,
    CHORUS_CPU_AVX512BW = 1 << 5,
    CHORUS_CPU_AVX512VL = 1 << 6,
    CHORUS_CPU_AVX512VNNI = 1 << 7,
    CHORUS_CPU_AVXVNNI = 1 << 8,
    CHORUS_CPU_BMI2 = 1 << 9,
    CHORUS_CPU_AVX512DQ = 1 << 10,
    CHORUS_CPU_AVX512CD = 1 << 11,
};

/// The features of the CPU this runs on (CPUID); 0 on other architectures.
unsigned chorus_cpu_features(void);

#endif
