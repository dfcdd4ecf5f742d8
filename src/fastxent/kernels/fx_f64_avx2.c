/* The float64 kernels for avx2: see fx_instance.h. */
#define FX_F32 0
#define FX_ISA_AVX2 1
#include "fx_instance.h"
