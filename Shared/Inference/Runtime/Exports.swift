// The kernels (and the tensor types they take) are part of what this module
// offers: code that loads models uses them without importing them itself.
@_exported import Kernels
