// The CUDA kernels behind Ops<Cuda>, as launch functions on device pointers (src/cuda/*.cu). Every
// launch goes to the calling thread's stream (cudaStreamPerThread) and returns without waiting,
// except the reductions that return a value to the host.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>

namespace loopus::cuda {

/// The element types of device-resident weights.
enum class DevType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

/// out[T, cols] = rows ids_dev[t] of E [*, cols] (any DevType), widened to f32.
void launch_embed(const void* E, DevType dt, int64_t cols, const int32_t* ids_dev, int64_t T, float* out);
/// dst[n] = src[n] rounded to dt (f16 or bf16; round to nearest even).
void launch_from_f32(const float* src, int64_t n, DevType dt, void* dst);

/// y[T, rows] = x[T, cols] · Wᵀ for T ≤ kGemvMaxT: one warp per weight row, W streamed once, f32
/// accumulation.
constexpr int64_t kGemvMaxT = 8;
void launch_gemv(const void* W, DevType dt, int64_t rows, int64_t cols, const float* x, int64_t T, float* y);
/// Up to kMaxGemvProducts matrices of one x[T, cols] (same DevType), rows first_row[i] ..
/// first_row[i + 1] of the launch being matrix i: y_i[T, rows_i] = x · W_iᵀ, one launch.
constexpr int kMaxGemvProducts = 4;
struct GemvProducts {
  const void* w[kMaxGemvProducts] = {};
  float* y[kMaxGemvProducts] = {};
  int64_t rows[kMaxGemvProducts] = {};
  int64_t first_row[kMaxGemvProducts + 1] = {};
  int n = 0;
};
/// false (nothing launched) when the shapes do not allow the one-launch kernel (then run them one by one).
bool launch_gemv_multi(const GemvProducts& p, DevType dt, int64_t cols, const float* x, int64_t T);
/// The same for any T through cuBLAS (f32: SGEMM semantics, no TF32; f16/bf16: x rounded to W's
/// type, f32 accumulation and output). `xconv` holds T·cols elements of W's type (unused for f32).
void gemm_cublas(const void* W, DevType dt, int64_t rows, int64_t cols, const float* x, int64_t T, float* y,
                 void* xconv);

/// y = x / rms(x) · g per row of d (g f32 on the device); y may alias x.
void launch_rmsnorm(const float* x, const float* g, int64_t T, int64_t d, float eps, float* y);
/// Rotary embedding in place on x[T, n_head, hd]; freq_dev[n_rot / 2] are the pair frequencies
/// (theta^(-2i/n_rot) / factor_i, computed on the host in double); interleaved: pairs (2i, 2i+1),
/// else (i, i + n_rot/2).
void launch_rope(float* x, int64_t T, int n_head, int hd, int n_rot, int64_t pos0, const double* freq_dev,
                 bool interleaved, float mscale);
/// Causal GQA (Ops contract); partial[...] is scratch of attention_scratch_floats(...) floats.
int64_t attention_scratch_floats(int64_t T, int64_t n_keys_max, int n_head, int hd);
void launch_attention(const float* q, const float* k, const float* v, int64_t T, int64_t pos0, int64_t kv_begin,
                      int n_head, int n_kv, int hd, float* out, float* partial);

void launch_swiglu(const float* g, const float* u, int64_t n, float* out);
void launch_add(float* y, const float* x, int64_t n);
void launch_sub(const float* a, const float* b, int64_t n, float* out);
void launch_mix(float* h, const float* p, float alpha, int64_t n);
void launch_fill(float* x, float v, int64_t n);
void launch_fill_f64(double* x, double v, int64_t n);

/// Softmax / log-softmax in place over n values.
void launch_softmax(float* x, int64_t n, bool log);
/// The selective gate's mix (Ops contract); returns the mean of a (waits for the stream).
/// scratch: 2 doubles of device memory.
float selective_mix(const float* z, const float* bias, const float* A, const float* p, float* h, int64_t T, int64_t d,
                    double* scratch);
/// w · LayerNorm(x) + bias for one row of d (waits). scratch: 4 doubles.
float layernorm_dot(const float* x, const float* ln_w, const float* ln_b, const float* w, float bias, float eps,
                    int64_t d, double* scratch);
/// ‖a − b‖₂ (waits). scratch: 2 doubles.
double distance(const float* a, const float* b, int64_t n, double* scratch);
/// Σ exp(logp)·(logp − logq) (waits). scratch: 2 doubles.
double kl_div(const float* logp, const float* logq, int64_t n, double* scratch);
/// Index of the largest value, the first on ties; -1 when n == 0 (waits). scratch: 16 bytes.
int64_t argmax(const float* x, int64_t n, void* scratch);

}  // namespace loopus::cuda
