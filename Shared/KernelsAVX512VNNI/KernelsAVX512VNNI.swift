// KernelsAVX512VNNI: KernelCode (linked here as Code) compiled
// for AVX-512 with VNNI (Cascade Lake, Ice Lake, Zen 4 and later).
// KernelDispatch uses it only on a CPU that has these instructions.
