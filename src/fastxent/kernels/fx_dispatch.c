/*
 * Run-time dispatch and the checks that run before a kernel: which instance's table is
 * in use (the widest the CPU runs, unless a test selects another), OpenMP queries that
 * also compile without OpenMP, the label validation pass and the [0, 1] check of
 * binary_cross_entropy's input.
 */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "fx_api.h"
#include "fx_labels.h"

/* ------------------------------------------------------------------ ISA tables */

const fx_table *fx_table_f32 = &fx_table_f32_baseline;
const fx_table *fx_table_f64 = &fx_table_f64_baseline;
const fx_table *fx_table_f16 = &fx_table_f16_baseline;
const fx_table *fx_table_bf16 = &fx_table_bf16_baseline;

/* The instances, widest first: (name, float32, float64, float16, bfloat16 tables). */
typedef struct { const char *name; const fx_table *f32, *f64, *f16, *bf16; } fx_isa_entry;
static const fx_isa_entry fx_isas[] = {
#if FX_HAVE_X86_DISPATCH
    {"avx512", &fx_table_f32_avx512, &fx_table_f64_avx512, &fx_table_f16_avx512,
     &fx_table_bf16_avx512},
    {"avx2", &fx_table_f32_avx2, &fx_table_f64_avx2, &fx_table_f16_avx2, &fx_table_bf16_avx2},
#endif
    {"baseline", &fx_table_f32_baseline, &fx_table_f64_baseline, &fx_table_f16_baseline,
     &fx_table_bf16_baseline},
};
#define FX_N_ISAS (sizeof fx_isas / sizeof fx_isas[0])

const char *fx_isa_name(int i)
{
    return i >= 0 && (size_t)i < FX_N_ISAS ? fx_isas[i].name : NULL;
}

int fx_isa_supported(const char *name)
{
    if (strcmp(name, "baseline") == 0) return 1;
#if FX_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    /* (F16C, which the half instances' float16 conversions use, comes with every AVX2
       CPU; GCC's __builtin_cpu_supports has no name for it) */
    int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
             && __builtin_cpu_supports("bmi2");
    if (strcmp(name, "avx2") == 0) return v3;
    if (strcmp(name, "avx512") == 0)
        return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
    return 0;
}

int fx_select_isa(const char *name)
{
    for (size_t i = 0; i < FX_N_ISAS; i++) {
        const fx_isa_entry *e = &fx_isas[i];
        int wanted = strcmp(name, "best") == 0 || strcmp(name, e->name) == 0;
        if (wanted && fx_isa_supported(e->name)) {
            fx_table_f32 = e->f32;
            fx_table_f64 = e->f64;
            fx_table_f16 = e->f16;
            fx_table_bf16 = e->bf16;
            return 0;
        }
        if (wanted && strcmp(name, "best") != 0) return -1;
    }
    return -1;
}

const char *fx_current_isa(void) { return fx_table_f32->isa; }

/* ------------------------------------------------------------------ OpenMP */

int fx_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fx_omp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int fx_thread_cap(void)
{
#ifdef _OPENMP
    int a = omp_get_max_threads(), b = omp_get_num_procs();
    return a > b ? a : b;
#else
    return 1;
#endif
}

/* GNU libgomp exits the process ("Thread creation failed") when it cannot create the
   threads of a parallel region, e.g. under an address-space limit (RLIMIT_AS). So before
   the first region of more threads than any before, fastxent creates that many threads
   itself, with the stack size libgomp will give them (OMP_STACKSIZE or GOMP_STACKSIZE,
   else the default); if it cannot, the call runs on as many as it could create. libgomp
   keeps a pool of threads per calling thread, so what was proven is remembered per
   calling thread: later calls of at most that many threads from it need no probe. */
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
#include <stdlib.h>
#include <ctype.h>
static void *fx_probe_thread(void *arg) { return arg; }

/* OMP_STACKSIZE's format: a size with an optional B, K, M or G suffix, K by default;
   0 when unset or unreadable (then the default stack size is what libgomp uses too). */
static size_t fx_omp_stacksize(void)
{
    const char *v = getenv("OMP_STACKSIZE");
    if (!v || !*v) v = getenv("GOMP_STACKSIZE");
    if (!v || !*v) return 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    while (*end && isspace((unsigned char)*end)) end++;
    unsigned long long unit = 1024;
    switch (toupper((unsigned char)*end)) {
    case 'B': unit = 1; break;
    case 'K': case 0: unit = 1024; break;
    case 'M': unit = 1024ULL * 1024; break;
    case 'G': unit = 1024ULL * 1024 * 1024; break;
    default: return 0;
    }
    return (size_t)(n * unit);
}

int fx_threads_creatable(int nt)
{
    static __thread int known_ok = 1;   /* per calling thread, as libgomp's pools */
    if (nt <= known_ok) return nt;
    pthread_attr_t attr, *pattr = NULL;
    size_t stack = fx_omp_stacksize();
    if (stack && pthread_attr_init(&attr) == 0) {
        if (pthread_attr_setstacksize(&attr, stack) == 0) pattr = &attr;
        else pthread_attr_destroy(&attr);
    }
    int made = 1;                       /* the calling thread */
    pthread_t tids[64];
    while (made < nt && made - 1 < 64) {
        if (pthread_create(&tids[made - 1], pattr, fx_probe_thread, NULL) != 0) break;
        made++;
    }
    for (int i = 0; i < made - 1; i++) pthread_join(tids[i], NULL);
    if (pattr) pthread_attr_destroy(pattr);
    if (made == nt) known_ok = nt;
    return made;
}
#else
int fx_threads_creatable(int nt) { return nt; }
#endif

/* ------------------------------------------------------------------ checks */

/* The labels' usual case, no weights and no bad label, without a branch per label: how
   many of n labels of type T are kept (not ignore_index), or -1 if one is outside
   [0, C) (the caller then finds the first). A loop the compiler vectorises: an AVX2
   copy where the CPU has it (measured: the scalar loop's compare and exit per label
   were 10% of a 2-class map's cross_entropy). (uint64 labels take the caller's loop:
   values above INT64_MAX must be bad even where they wrap to ignore_index.) */
#define FX_KEPT_LOOP(T)                                                                 \
    {                                                                                   \
        const T *l = (const T *)labels;                                                 \
        for (int64_t i = 0; i < n; i++) {                                               \
            int64_t t = (int64_t)l[i], kept = t != ignore_index;                        \
            count += kept;                                                              \
            bad |= kept & ((uint64_t)t >= (uint64_t)C);                                 \
        }                                                                               \
    }                                                                                   \
    break;
#define FX_COUNT_KEPT_BODY                                                              \
    int64_t count = 0, bad = 0;                                                         \
    switch (type) {                                                                     \
    case FX_I8:  FX_KEPT_LOOP(int8_t)                                                   \
    case FX_I16: FX_KEPT_LOOP(int16_t)                                                  \
    case FX_I32: FX_KEPT_LOOP(int32_t)                                                  \
    case FX_I64: FX_KEPT_LOOP(int64_t)                                                  \
    case FX_U8:  FX_KEPT_LOOP(uint8_t)                                                  \
    case FX_U16: FX_KEPT_LOOP(uint16_t)                                                 \
    case FX_U32: FX_KEPT_LOOP(uint32_t)                                                 \
    default: return -1;                                                                 \
    }                                                                                   \
    return bad ? -1 : count;
static int64_t count_kept(const void *labels, fx_label_type type, int64_t n, int64_t C,
                          int64_t ignore_index)
{
    FX_COUNT_KEPT_BODY
}
#if FX_HAVE_X86_DISPATCH
__attribute__((target("avx2")))
static int64_t count_kept_avx2(const void *labels, fx_label_type type, int64_t n, int64_t C,
                               int64_t ignore_index)
{
    FX_COUNT_KEPT_BODY
}
#endif
#undef FX_COUNT_KEPT_BODY
#undef FX_KEPT_LOOP

int64_t fx_check_labels(const void *labels, fx_label_type type, int64_t n, int64_t C,
                        int64_t ignore_index, const double *weight, double *wsum,
                        int64_t *bad_value)
{
    if (!weight && type != FX_U64) {
#if FX_HAVE_X86_DISPATCH
        /* the AVX2 copy where the selected instances are AVX2 or wider (select_isa) */
        int64_t kept = fx_table_f32 != &fx_table_f32_baseline
                     ? count_kept_avx2(labels, type, n, C, ignore_index)
                     : count_kept(labels, type, n, C, ignore_index);
#else
        int64_t kept = count_kept(labels, type, n, C, ignore_index);
#endif
        if (kept >= 0) {
            *wsum = (double)kept;
            return -1;
        }
    }
    /* The kept labels counted in an integer without weights (the same value as a sum of
       ones, without a chain of float64 additions), their weights summed in order with;
       the type switch outside the loop (uint64 through fx_label, whose values above
       INT64_MAX are bad even where they wrap to ignore_index). */
    double s = 0.0;
    int64_t kept = 0;
#define FX_CHECK_LOOP(T)                                                                \
    for (int64_t i = 0; i < n; i++) {                                                   \
        int64_t t = (int64_t)((const T *)labels)[i];                                    \
        if (t == ignore_index) continue;                                                \
        if (t < 0 || t >= C) {                                                          \
            *bad_value = t;                                                             \
            return i;                                                                   \
        }                                                                               \
        if (weight) s += weight[t];                                                     \
        else kept++;                                                                    \
    }                                                                                   \
    break;
    switch (type) {
    case FX_I8:  FX_CHECK_LOOP(int8_t)
    case FX_I16: FX_CHECK_LOOP(int16_t)
    case FX_I32: FX_CHECK_LOOP(int32_t)
    case FX_I64: FX_CHECK_LOOP(int64_t)
    case FX_U8:  FX_CHECK_LOOP(uint8_t)
    case FX_U16: FX_CHECK_LOOP(uint16_t)
    case FX_U32: FX_CHECK_LOOP(uint32_t)
    default:
        for (int64_t i = 0; i < n; i++) {
            int64_t t = fx_label(labels, type, i, C, ignore_index);
            if (t == FX_LABEL_IGNORED) continue;
            if (t == FX_LABEL_BAD) {
                *bad_value = fx_read_label(labels, type, i);
                return i;
            }
            if (weight) s += weight[t];
            else kept++;
        }
    }
#undef FX_CHECK_LOOP
    *wsum = weight ? s : (double)kept;
    return -1;
}

int64_t fx_find_outside_unit(const void *x, int is_f32, int64_t n)
{
    if (is_f32) {
        const float *p = (const float *)x;
        for (int64_t i = 0; i < n; i++) if (!(p[i] >= 0.0f && p[i] <= 1.0f)) return i;
    } else {
        const double *p = (const double *)x;
        for (int64_t i = 0; i < n; i++) if (!(p[i] >= 0.0 && p[i] <= 1.0)) return i;
    }
    return -1;
}
