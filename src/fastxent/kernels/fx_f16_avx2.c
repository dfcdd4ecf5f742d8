/* The float16 kernels for avx2 (float32 compute, float16 in memory): see fx_instance.h. */
#define FX_F32 1
#define FX_HALF_F16 1
#define FX_ISA_AVX2 1
#include "fx_instance.h"
