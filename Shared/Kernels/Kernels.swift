// Kernels: what every instruction set's kernels share — GGML's quantised types
// and their block layouts, K-quant scales, repacked matrices, reference
// dequantisation, and the table of kernel entry points. It must not depend on
// a CPU feature.
