/* The float32 kernels for avx512: see fx_instance.h. */
#define FX_F32 1
#define FX_ISA_AVX512 1
#include "fx_instance.h"
