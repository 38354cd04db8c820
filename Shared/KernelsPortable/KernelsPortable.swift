// KernelsPortable: KernelCode (linked here as Code) compiled
// for plain Swift SIMD, for any x86-64 or other CPU.
// KernelDispatch uses it only on a CPU that has these instructions.
