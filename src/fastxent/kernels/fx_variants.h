/*
 * The declared variants: the option combinations each kernel family is compiled for,
 * one line each, so that the inner loops carry no branch on an option. A kernel looks
 * its variant up from the arguments (fx_*_variant below) and runs that instance.
 * Adding an option that changes the inner loops: a column in the list, its math where
 * the list's macro is expanded. Adding a combination: one line.
 */
#ifndef FX_VARIANTS_H
#define FX_VARIANTS_H

#include "fx_api.h"
#include "fx_softmax_item.h"

/* The softmax passes (fx_softmax_rows.h, fx_softmax_cols.h):
   X(name, aux, weighted): aux = the per-class target weights the passes form
   (FX_AUX_*); weighted = whether they read class weights. Hard labels without
   smoothing read no per-class term at all, so `plain` serves them weighted or not. */
#define FX_SOFTMAX_VARIANTS(X)                    \
    X(plain,      FX_AUX_NONE,   0)               \
    X(smooth,     FX_AUX_SMOOTH, 0)               \
    X(smooth_w,   FX_AUX_SMOOTH, 1)               \
    X(soft,       FX_AUX_SOFT,   0)               \
    X(soft_w,     FX_AUX_SOFT,   1)

/* The elementwise losses (fx_elementwise.h):
   X(name, loss, u8 target, weighted, pos_weighted). kl_div takes no weight. */
#define FX_ELEMENTWISE_VARIANTS(X)                                    \
    X(bce_logits,          FX_BCE_LOGITS,    0, 0, 0)                 \
    X(bce_logits_w,        FX_BCE_LOGITS,    0, 1, 0)                 \
    X(bce_logits_pw,       FX_BCE_LOGITS,    0, 0, 1)                 \
    X(bce_logits_w_pw,     FX_BCE_LOGITS,    0, 1, 1)                 \
    X(bce_logits_u8,       FX_BCE_LOGITS,    1, 0, 0)                 \
    X(bce_logits_u8_w,     FX_BCE_LOGITS,    1, 1, 0)                 \
    X(bce_logits_u8_pw,    FX_BCE_LOGITS,    1, 0, 1)                 \
    X(bce_logits_u8_w_pw,  FX_BCE_LOGITS,    1, 1, 1)                 \
    X(bce_probs,           FX_BCE_PROBS,     0, 0, 0)                 \
    X(bce_probs_w,         FX_BCE_PROBS,     0, 1, 0)                 \
    X(bce_probs_u8,        FX_BCE_PROBS,     1, 0, 0)                 \
    X(bce_probs_u8_w,      FX_BCE_PROBS,     1, 1, 0)                 \
    X(kl,                  FX_KL,            0, 0, 0)                 \
    X(kl_log_target,       FX_KL_LOG_TARGET, 0, 0, 0)

enum {
#define FX_ENUM_NAME(name, ...) FX_SOFTMAX_##name,
    FX_SOFTMAX_VARIANTS(FX_ENUM_NAME)
#undef FX_ENUM_NAME
#define FX_ENUM_NAME(name, ...) FX_ELEMENTWISE_##name,
    FX_ELEMENTWISE_VARIANTS(FX_ENUM_NAME)
#undef FX_ENUM_NAME
    FX_NO_VARIANT = -1
};

/* The per-class target weights a call needs (FX_AUX_*). */
static inline int fx_softmax_aux(const fx_softmax_args *A)
{
    return A->soft ? FX_AUX_SOFT : A->smoothing > 0.0 ? FX_AUX_SMOOTH : FX_AUX_NONE;
}

/* The softmax variant of a call. */
static inline int fx_softmax_variant(const fx_softmax_args *A)
{
    int aux = fx_softmax_aux(A);
    int weighted = A->weight != NULL && aux != FX_AUX_NONE;
#define FX_MATCH(name, AUX, W) if (aux == AUX && weighted == W) return FX_SOFTMAX_##name;
    FX_SOFTMAX_VARIANTS(FX_MATCH)
#undef FX_MATCH
    return FX_NO_VARIANT;
}

/* The elementwise variant of a call; FX_NO_VARIANT for a combination not declared. */
static inline int fx_elementwise_variant(const fx_elementwise_args *A)
{
    int u8 = A->target_u8 != 0, w = A->weight != NULL, pw = A->pos_weight != NULL;
#define FX_MATCH(name, LOSS, U8, W, PW) \
    if (A->loss == LOSS && u8 == U8 && w == W && pw == PW) return FX_ELEMENTWISE_##name;
    FX_ELEMENTWISE_VARIANTS(FX_MATCH)
#undef FX_MATCH
    return FX_NO_VARIANT;
}

#endif /* FX_VARIANTS_H */
