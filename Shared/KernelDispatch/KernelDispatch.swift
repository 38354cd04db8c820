// KernelDispatch: picks, once at start, the best kernel module the CPU can run
// (portable, AVX2, AVX-VNNI, AVX-512 VNNI) and exposes it as the kernel table
// the inference core calls. It must not hold kernels itself.
