/* Bidirectional bf16 attention over packed sequences, for CPUs with AVX512-BF16.
 *
 * Why hand-written: torch's CPU flash-attention kernel spends most of its time outside the matrix
 * products on short sequences with small heads (a cross-encoder's 100-300 tokens, head_dim 32-64):
 * per (sequence, head) it runs a handful of tiny blocked GEMM calls and converts between layouts.
 * Here one task is one (sequence, head): keys and values are repacked once into the pair layout that
 * VDPBF16PS reads, every score row of the sequence is kept whole (no online rescaling; rows are at
 * most a few thousand floats), and softmax runs in fp32 with a polynomial exp.
 *
 * Numerics follow torch's kernel: q·k accumulated in fp32, scaled in fp32, softmax in fp32, the
 * probabilities rounded to bf16 for the product with V, accumulated in fp32, divided by the row sum,
 * rounded to bf16 once.
 *
 * Threads: an OpenMP loop over tasks. The library is linked against libgomp.so.1, the soname torch
 * already loaded, so it runs on torch's own thread pool (no second pool spinning on the same cores).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef uint16_t bf16;

static inline __m512 exp_nonpositive(__m512 x) {
    /* e^x = 2^n * 2^f with n = round(x log2 e), |f| <= 1/2; 2^f by a degree-4 Chebyshev fit, relative
     * error < 8e-6: far below the bf16 rounding (4e-3) every probability then gets. */
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(0.009670767933130264f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05587553605437279f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022211134433746f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931272745132446f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Every tile is 16 rows of 64 bytes: 16x32 bf16 (queries, probabilities, packed keys and values) or
 * 16x16 fp32 (scores, outputs). */
static void configure_tiles(void) {
    struct __attribute__((packed)) {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
}

/* Tile registers: scores: 0-3 query chunks of 32 dims, 4 and 6 keys, 5 and 7 scores; outputs: 0-3
 * accumulators, 4, 5 and 7 values, 6 probabilities. */
/* Where key (or value) j of a task lies: the shared prefix's P rows first, then the sequence's own. */
typedef struct { const bf16 *prefix; int64_t prefix_tok; int64_t P; const bf16 *own; int64_t own_tok; } rows_t;

static inline const bf16 *row_at(const rows_t *r, int64_t j) {
    return j < r->P ? r->prefix + j * r->prefix_tok : r->own + (j - r->P) * r->own_tok;
}

static inline __attribute__((always_inline)) void attend_one(
    const bf16 *q, int64_t q_tok, rows_t keys, rows_t values, bf16 *out, int64_t out_tok, int64_t L,
    int64_t Lq, int causal, float scale, const int D,
    uint32_t *kp, uint32_t *vp, float *s, bf16 *p, bf16 *qbuf, float *obuf) {
    const int64_t Lp = (L + 31) & ~(int64_t)31;
    const int DP = D / 2, DV = D / 16, DC = D / 32;
    /* keys, VNNI pairs along the head dimension: kp[dp * Lp + j] = (k_j[2dp], k_j[2dp+1]) */
    for (int64_t j = 0; j < L; j++) {
        const uint32_t *row = (const uint32_t *)row_at(&keys, j);
        for (int dp = 0; dp < DP; dp++) kp[dp * Lp + j] = row[dp];
    }
    for (int dp = 0; dp < DP; dp++)
        for (int64_t j = L; j < Lp; j++) kp[dp * Lp + j] = 0;
    /* values, VNNI pairs along the keys: vp[jp * D + d] = (v_{2jp}[d], v_{2jp+1}[d]) */
    for (int64_t jp = 0; jp < Lp / 2; jp++) {
        int64_t j0 = 2 * jp, j1 = 2 * jp + 1;
        const bf16 *v0 = row_at(&values, j0), *v1 = j1 < L ? row_at(&values, j1) : v0;
        for (int dv = 0; dv < DV; dv++) {
            __m512i lo = j0 < L ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(v0 + dv * 16)))
                                : _mm512_setzero_si512();
            __m512i hi = j1 < L ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(v1 + dv * 16)))
                                : _mm512_setzero_si512();
            _mm512_storeu_si512(vp + jp * D + dv * 16, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t r0 = 0; r0 < Lq; r0 += 16) {
        const int rows = Lq - r0 < 16 ? (int)(Lq - r0) : 16;
        /* causal: query row r sees keys j <= (L - Lq) + r (the prefix and its own past) */
        const int64_t seen = causal ? L - Lq + r0 + rows : L;
        const int64_t Lb = (seen + 31) & ~(int64_t)31;
        const bf16 *qs = q + r0 * q_tok;
        int64_t qstride = q_tok * 2;
        if (rows < 16) {  /* a short last block: copy it, never read past the queries */
            memset(qbuf, 0, 16 * D * 2);
            for (int r = 0; r < rows; r++) memcpy(qbuf + r * D, qs + r * q_tok, D * 2);
            qs = qbuf;
            qstride = D * 2;
        }
        _tile_loadd(0, qs, qstride);
        if (DC > 1) _tile_loadd(1, qs + 32, qstride);
        if (DC > 2) _tile_loadd(2, qs + 64, qstride);
        if (DC > 3) _tile_loadd(3, qs + 96, qstride);
        /* scores, two blocks of 16 keys at a time in independent tiles (5 and 7) so the products overlap */
        for (int64_t jb = 0; jb < Lb; jb += 32) {
            _tile_zero(5);
            _tile_zero(7);
/* query chunk c (tile c) against keys jb..jb+31: tile numbers must be immediates, hence a macro */
#define SCORE_CHUNK(c)                                              \
    do {                                                            \
        _tile_loadd(4, kp + 16 * (c) * Lp + jb, Lp * 4);            \
        _tile_loadd(6, kp + 16 * (c) * Lp + jb + 16, Lp * 4);       \
        _tile_dpbf16ps(5, c, 4);                                    \
        _tile_dpbf16ps(7, c, 6);                                    \
    } while (0)
            SCORE_CHUNK(0);
            if (DC > 1) SCORE_CHUNK(1);
            if (DC > 2) SCORE_CHUNK(2);
            if (DC > 3) SCORE_CHUNK(3);
#undef SCORE_CHUNK
            _tile_stored(5, s + jb, Lp * 4);
            _tile_stored(7, s + jb + 16, Lp * 4);
        }
        float inv_sum[16];
        for (int r = 0; r < rows; r++) {
            float *sr = s + r * Lp;
            const int64_t n = causal ? L - Lq + r0 + r + 1 : L;
            const int64_t full = n & ~(int64_t)15;
            const __mmask16 tail = (__mmask16)((1u << (n & 15)) - 1u);
            __m512 m = _mm512_set1_ps(-3.0e38f);
            for (int64_t j = 0; j < full; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(sr + j));
            if (tail) m = _mm512_mask_max_ps(m, tail, m, _mm512_loadu_ps(sr + full));
            const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m) * scale);
            __m512 sum = _mm512_setzero_ps();
            bf16 *pr = p + r * Lp;
            for (int64_t j = 0; j < full; j += 16) {
                __m512 e = exp_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(sr + j), vscale, mx));
                sum = _mm512_add_ps(sum, e);  /* of the fp32 values, as torch's kernel sums them */
                _mm256_storeu_si256((__m256i *)(pr + j), (__m256i)_mm512_cvtneps_pbh(e));
            }
            for (int64_t j = full; j < Lb; j += 16) {  /* keys not seen, and the padding, weigh zero */
                __m512 e = _mm512_setzero_ps();
                if (j == full && tail)
                    e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(sr + j), vscale, mx)));
                sum = _mm512_add_ps(sum, e);
                _mm256_storeu_si256((__m256i *)(pr + j), (__m256i)_mm512_cvtneps_pbh(e));
            }
            inv_sum[r] = 1.0f / _mm512_reduce_add_ps(sum);
        }
        for (int r = rows; r < 16; r++) memset(p + r * Lp, 0, Lb * 2);
        /* outputs: up to four 16-column accumulators (tiles 0-3, free once the scores are done) fed by
         * one probability tile per 32 keys, so consecutive products do not wait on each other */
        for (int g = 0; g < DV; g += 4) {
            const int n = DV - g < 4 ? DV - g : 4;
            _tile_zero(0);
            _tile_zero(1);
            if (n > 2) { _tile_zero(2); _tile_zero(3); }
            for (int64_t jc = 0; jc < Lb; jc += 32) {
                const uint32_t *vrow = vp + (jc / 2) * D + g * 16;
                _tile_loadd(6, p + jc, Lp * 2);
                _tile_loadd(4, vrow, D * 4);
                _tile_loadd(5, vrow + 16, D * 4);
                _tile_dpbf16ps(0, 6, 4);
                _tile_dpbf16ps(1, 6, 5);
                if (n > 2) {
                    _tile_loadd(7, vrow + 32, D * 4);
                    _tile_dpbf16ps(2, 6, 7);
                    _tile_loadd(4, vrow + 48, D * 4);
                    _tile_dpbf16ps(3, 6, 4);
                }
            }
            _tile_stored(0, obuf + g * 16, D * 4);
            _tile_stored(1, obuf + (g + 1) * 16, D * 4);
            if (n > 2) { _tile_stored(2, obuf + (g + 2) * 16, D * 4); _tile_stored(3, obuf + (g + 3) * 16, D * 4); }
        }
        for (int r = 0; r < rows; r++) {
            bf16 *dst = out + (r0 + r) * out_tok;
            const __m512 inv = _mm512_set1_ps(inv_sum[r]);
            for (int dv = 0; dv < DV; dv++)
                _mm256_storeu_si256((__m256i *)(dst + dv * 16),
                                    (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(obuf + r * D + dv * 16), inv)));
        }
    }
}

/* Asks the kernel for the AMX tile state (once per process; oneDNN asks the same). 0 when granted. */
int rerankd_request_amx(void) {
    return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
}

/* Attention of every packed sequence, all heads: queries (T, heads, d) and keys/values (T, kv_heads, d)
 * given by element strides per token and per head; the output (Tq, heads, d) contiguous. Sequence i
 * has keys bounds[i]..bounds[i+1] and queries query_bounds[i]..query_bounds[i+1]. With a prefix
 * (prefix_len > 0), every sequence's keys are the prefix's then its own. causal: query r of a
 * sequence with n keys and m queries sees keys 0..n-m+r. Returns 0, -1 for an unsupported head_dim
 * (32, 64, 128 are), -2 when out of memory. */
int rerankd_attention_bf16(const bf16 *q, int64_t q_tok, int64_t q_head,
                           const bf16 *k, int64_t k_tok, int64_t k_head,
                           const bf16 *v, int64_t v_tok, int64_t v_head,
                           const bf16 *pk, int64_t pk_tok, int64_t pk_head,
                           const bf16 *pv, int64_t pv_tok, int64_t pv_head, int64_t prefix_len,
                           bf16 *out, const int64_t *bounds, const int64_t *query_bounds,
                           int64_t n_seq, int64_t heads, int64_t kv_heads, int64_t head_dim, int causal,
                           float scale, int n_threads) {
    if (head_dim != 32 && head_dim != 64 && head_dim != 128) return -1;
    if (kv_heads <= 0 || heads % kv_heads != 0) return -1;
    const int64_t group = heads / kv_heads;
    int64_t longest = 0;
    for (int64_t i = 0; i < n_seq; i++)
        if (bounds[i + 1] - bounds[i] > longest) longest = bounds[i + 1] - bounds[i];
    const int64_t Lmax = (prefix_len + longest + 31) & ~(int64_t)31;
    const int64_t out_tok = heads * head_dim;
    int failed = 0;
#pragma omp parallel num_threads(n_threads)
    {
        uint32_t *kp = malloc((size_t)(Lmax * head_dim / 2 * 4 + 64));
        uint32_t *vp = malloc((size_t)(Lmax * head_dim / 2 * 4 + 64));
        float *s = malloc((size_t)(16 * Lmax * 4 + 64));
        bf16 *p = malloc((size_t)(16 * Lmax * 2 + 64));
        bf16 *qbuf = malloc((size_t)(16 * head_dim * 2));
        float *obuf = malloc((size_t)(16 * head_dim * 4));
        if (!kp || !vp || !s || !p || !qbuf || !obuf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        if (!failed) {  /* every thread sees the same value here, so all or none enter the loop */
            configure_tiles();
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < n_seq * heads; task++) {
                const int64_t i = task / heads, h = task % heads, g = h / group;
                const int64_t start = bounds[i], own = bounds[i + 1] - start;
                const int64_t first = query_bounds[i], Lq = query_bounds[i + 1] - first;
                if (own <= 0 || Lq <= 0) continue;
                const bf16 *qi = q + first * q_tok + h * q_head;
                rows_t keys = {pk ? pk + g * pk_head : 0, pk_tok, prefix_len, k + start * k_tok + g * k_head, k_tok};
                rows_t values = {pv ? pv + g * pv_head : 0, pv_tok, prefix_len, v + start * v_tok + g * v_head, v_tok};
                bf16 *oi = out + first * out_tok + h * head_dim;
                const int64_t L = prefix_len + own;
                if (head_dim == 32)
                    attend_one(qi, q_tok, keys, values, oi, out_tok, L, Lq, causal, scale, 32, kp, vp, s, p, qbuf, obuf);
                else if (head_dim == 64)
                    attend_one(qi, q_tok, keys, values, oi, out_tok, L, Lq, causal, scale, 64, kp, vp, s, p, qbuf, obuf);
                else
                    attend_one(qi, q_tok, keys, values, oi, out_tok, L, Lq, causal, scale, 128, kp, vp, s, p, qbuf, obuf);
            }
            _tile_release();  /* leave no tile state behind on torch's threads */
        }
        free(kp); free(vp); free(s); free(p); free(qbuf); free(obuf);
    }
    return failed ? -2 : 0;
}
