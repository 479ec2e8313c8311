/* LayerNorm of (x + residual) in fp32, written twice: fp32 (the residual stream) and bf16 (what the
 * next matrix product reads), for CPUs with AVX512-BF16.
 *
 * Why hand-written: a post-LN encoder that keeps its residual stream fp32 under bf16 weights
 * (backends/residual_fp32.py) runs, per sublayer, torch's add (bf16 + fp32 -> fp32), its LayerNorm
 * (fp32 -> fp32) and a conversion to bf16: three passes over the activations and 24 bytes moved per
 * element. Here one pass per row reads x and the residual once and writes both outputs (12 bytes),
 * the row staying in L1 between the statistics and the normalization.
 *
 * Numerics: mean, then the mean of squared deviations (two passes over the row, as torch's CPU
 * kernel), both in fp32 with per-lane partial sums; fp32 -> bf16 rounds to nearest even as torch does.
 *
 * Threads: an OpenMP loop over rows, on torch's own libgomp pool (see attention_bf16.c).
 */
#include <immintrin.h>
#include <stdint.h>

typedef uint16_t bf16;

static inline __m512 load_x(const void *x, int x_bf16, int64_t offset, __mmask16 mask) {
    if (x_bf16) {
        __m256i raw = _mm256_maskz_loadu_epi16(mask, (const bf16 *)x + offset);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
    }
    return _mm512_maskz_loadu_ps(mask, (const float *)x + offset);
}

static inline __mmask16 tail_mask(int64_t remaining) {
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

/* out32[r, :] = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta with s = x[r, :] + residual[r, :]
 * (residual may be NULL; gamma and beta may be NULL: 1 and 0); out16 = out32 rounded to bf16.
 * x is bf16 (x_bf16 = 1) or fp32; rows are contiguous. */
int rerankd_add_layer_norm(const void *x, int x_bf16, const float *residual, const float *gamma, const float *beta,
                           float *out32, bf16 *out16, int64_t rows, int64_t cols, float eps, int n_threads) {
    if (cols <= 0) return -1;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = r * cols;
        float *o = out32 + base;
        __m512 sum = _mm512_setzero_ps();
        for (int64_t c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 v = load_x(x, x_bf16, base + c, m);
            if (residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, residual + base + c));
            _mm512_mask_storeu_ps(o + c, m, v);
            sum = _mm512_add_ps(sum, v);
        }
        const float mean = _mm512_reduce_add_ps(sum) / (float)cols;
        const __m512 vmean = _mm512_set1_ps(mean);
        __m512 sq = _mm512_setzero_ps();
        for (int64_t c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, o + c), vmean);
            sq = _mm512_fmadd_ps(d, d, sq);
        }
        const float var = _mm512_reduce_add_ps(sq) / (float)cols;
        const __m512 vinv = _mm512_set1_ps(1.0f / __builtin_sqrtf(var + eps));
        for (int64_t c = 0; c < cols; c += 16) {
            __mmask16 m = tail_mask(cols - c);
            __m512 y = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, o + c), vmean), vinv);
            if (gamma) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, gamma + c));
            if (beta) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, beta + c));
            _mm512_mask_storeu_ps(o + c, m, y);
            _mm256_mask_storeu_epi16(out16 + base + c, m, (__m256i)_mm512_cvtneps_pbh(y));
        }
    }
    return 0;
}
