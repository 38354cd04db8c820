// KernelCode: the CPU kernels' source (matrix-vector and matrix-matrix
// products on quantised blocks, attention, dequantisation, vector maths),
// compiled once per instruction set into KernelsPortable, KernelsAVX2,
// KernelsAVXVNNI and KernelsAVX512VNNI (each links this folder as Code). It
// must not choose between them (KernelDispatch does).
