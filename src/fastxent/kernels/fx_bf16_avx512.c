/* The bfloat16 kernels for avx512 (float32 compute, bfloat16 in memory): see fx_instance.h. */
#define FX_F32 1
#define FX_HALF_BF16 1
#define FX_ISA_AVX512 1
#include "fx_instance.h"
