/* The float32 kernels for baseline: see fx_instance.h. */
#define FX_F32 1
#define FX_ISA_BASELINE 1
#include "fx_instance.h"
