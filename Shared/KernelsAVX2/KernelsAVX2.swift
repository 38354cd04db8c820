// KernelsAVX2: KernelCode (linked here as Code) compiled
// for AVX2 and FMA (Haswell, Zen and later).
// KernelDispatch uses it only on a CPU that has these instructions.
