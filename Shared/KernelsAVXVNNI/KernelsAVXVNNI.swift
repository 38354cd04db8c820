// KernelsAVXVNNI: KernelCode (linked here as Code) compiled
// for AVX2 with AVX-VNNI's 256-bit integer dot products (Alder Lake, Zen 5 and later).
// KernelDispatch uses it only on a CPU that has these instructions.
