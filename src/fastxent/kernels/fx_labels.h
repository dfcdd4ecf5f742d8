/*
 * Reading hard labels of any integer dtype in place, and classifying them: a class in
 * [0, C), ignored (== ignore_index), or bad. Used by the validation pass
 * (fx_dispatch.c) and by every kernel: the kernels classify again, because labels are
 * read twice with the GIL released, and a label another thread changes in between must
 * not index outside the row.
 */
#ifndef FX_LABELS_H
#define FX_LABELS_H

#include <stddef.h>
#include <stdint.h>
#include "fx_api.h"

enum { FX_LABEL_IGNORED = -1, FX_LABEL_BAD = -2 };

/* Bytes per label of a label type. */
static inline size_t fx_label_bytes(fx_label_type type) { return (size_t)1 << (type & 3); }

/* Label i as stored (uint64 values above INT64_MAX read as INT64_MIN: only for
   reporting; fx_label classifies them). */
static inline int64_t fx_read_label(const void *p, fx_label_type type, int64_t i)
{
    switch (type) {
    case FX_I8:  return ((const int8_t *)p)[i];
    case FX_I16: return ((const int16_t *)p)[i];
    case FX_I32: return ((const int32_t *)p)[i];
    case FX_I64: return ((const int64_t *)p)[i];
    case FX_U8:  return ((const uint8_t *)p)[i];
    case FX_U16: return ((const uint16_t *)p)[i];
    case FX_U32: return ((const uint32_t *)p)[i];
    default: {
        uint64_t v = ((const uint64_t *)p)[i];
        return v > (uint64_t)INT64_MAX ? INT64_MIN : (int64_t)v;
    }
    }
}

/* Label i as a class in [0, C), or FX_LABEL_IGNORED (it equals ignore_index), or
   FX_LABEL_BAD (anything else; a uint64 above INT64_MAX never equals an int64
   ignore_index). */
static inline int64_t fx_label(const void *p, fx_label_type type, int64_t i, int64_t C,
                               int64_t ignore_index)
{
    if (type == FX_U64 && ((const uint64_t *)p)[i] > (uint64_t)INT64_MAX) return FX_LABEL_BAD;
    int64_t t = fx_read_label(p, type, i);
    if (t == ignore_index) return FX_LABEL_IGNORED;
    return t >= 0 && t < C ? t : FX_LABEL_BAD;
}

/* fx_label for labels [i0, i0 + n) into out, the type switch outside the loop */
static inline void fx_labels(const void *p, fx_label_type type, int64_t i0, int64_t n,
                             int64_t C, int64_t ignore_index, int64_t *out)
{
#define FX_LABEL_LOOP(T)                                                                \
    for (int64_t l = 0; l < n; l++) {                                                   \
        int64_t t = (int64_t)((const T *)p)[i0 + l];                                    \
        out[l] = t == ignore_index ? FX_LABEL_IGNORED : t >= 0 && t < C ? t : FX_LABEL_BAD; \
    }                                                                                   \
    return;
    switch (type) {
    case FX_I8:  FX_LABEL_LOOP(int8_t)
    case FX_I16: FX_LABEL_LOOP(int16_t)
    case FX_I32: FX_LABEL_LOOP(int32_t)
    case FX_I64: FX_LABEL_LOOP(int64_t)
    case FX_U8:  FX_LABEL_LOOP(uint8_t)
    case FX_U16: FX_LABEL_LOOP(uint16_t)
    case FX_U32: FX_LABEL_LOOP(uint32_t)
    default:
        for (int64_t l = 0; l < n; l++) out[l] = fx_label(p, type, i0 + l, C, ignore_index);
    }
#undef FX_LABEL_LOOP
}

#endif /* FX_LABELS_H */
