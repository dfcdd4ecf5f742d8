/* Instantiates fx_impl.h for float32 and float64 under the current FX_ISA /
   FX_VBYTES / FX_TARGET_ATTR (set by fx_kernels.h). No include guard on purpose. */

#define FX_REAL float
#define FX_PREC f32
#define FX_IS_F32 1
#include "fx_impl.h"
#undef FX_REAL
#undef FX_PREC
#undef FX_IS_F32

#define FX_REAL double
#define FX_PREC f64
#define FX_IS_F32 0
#include "fx_impl.h"
#undef FX_REAL
#undef FX_PREC
#undef FX_IS_F32
