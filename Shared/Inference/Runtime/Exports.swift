// The kernels (and the tensor types they take) and the choice of them are
// part of what this module offers: code that loads models uses them without
// importing them itself.
@_exported import KernelDispatch
@_exported import Kernels
