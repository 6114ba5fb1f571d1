// Shared option parsing of the loopus CLI: model, loop and backend options, threads; the model is opened by io/discover.hpp.
// SPDX-License-Identifier: MIT
#pragma once
#include <omp.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <CLI/CLI.hpp>

#include "loopus/io/discover.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/threads.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "loopus/ops/reference/train.hpp"
#if defined(LOOPUS_HAS_CUDA)
#include "loopus/ops/cuda/ops.hpp"
#endif

namespace loopus::cli {

/// "a,b,,c" -> {"a", "b", "c"}.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) v.push_back(item);
  return v;
}

/// A flag's comma-separated integers, each in lo..hi; `what` names them in the error.
inline std::vector<int> parse_int_list(const std::string& s, const std::string& flag, int lo, int hi,
                                       const std::string& what) {
  std::vector<int> v;
  for (const auto& item : split_list(s)) {
    try {
      size_t used = 0;
      const int x = std::stoi(item, &used);
      if (used != item.size() || x < lo || x > hi) throw std::invalid_argument("range");
      v.push_back(x);
    } catch (const std::exception&) {
      throw UsageError(flag + " '" + s + "': expected a comma-separated list of " + what + " in " + std::to_string(lo) +
                       ".." + std::to_string(hi));
    }
  }
  if (v.empty()) throw UsageError(flag + " is empty");
  return v;
}

/// Loop counts for a flag (1..1024, as LoopParams takes them).
inline std::vector<int> parse_loop_list(const std::string& s, const std::string& flag) {
  return parse_int_list(s, flag, 1, 1024, "loop counts");
}

/// $LOOPUS_DATA_DIR, else the build's default (../shared/data beside the source tree).
inline std::filesystem::path data_dir() {
  if (const char* e = std::getenv("LOOPUS_DATA_DIR"); e && *e) return e;
  return LOOPUS_DEFAULT_DATA_DIR;
}

/// Options every model-reading subcommand shares.
struct ModelArgs {
  std::string model;
  std::string tokenizer;
  std::string dtype;     // "", f32, f16, bf16
  bool dequantize = false;
  bool mmap = false;
  int threads = 0;

  void add_to(CLI::App& app, bool model_required = true) {
    auto* m = app.add_option("-m,--model", model,
                             "model: GGUF file, llama2.c .bin, or Hugging Face / LoopUS folder (config.json + safetensors)");
    if (model_required) m->required();
    app.add_option("--tokenizer", tokenizer,
                   "tokenizer file: llama2.c tokenizer.bin, HF tokenizer.json, or a GGUF (default: from the model)");
    app.add_flag("--dequantize", dequantize,
                 "widen quantized weight matrices (q8_0, q4_0, q4_1, q4_K, q5_K, q6_K) to f32 on load instead of "
                 "computing on the quantized blocks");
    app.add_option("--dtype", dtype,
                   "convert weight matrices on load to f32|f16|bf16 (default: as stored, quantized ones included)")
        ->check(CLI::IsMember({"f32", "f16", "bf16"}));
    app.add_flag("--mmap", mmap, "map the file instead of reading it into memory (faster start, slower decode when pages are evicted)");
    app.add_option("-t,--threads", threads,
                   "CPU threads (default: OMP_NUM_THREADS if set, else the cores not busy with other programs)")
        ->check(CLI::Range(1, 4096));
  }
  /// Sets the thread count, and checks LOOPUS_ISA (a bad value is a usage error here, not mid-run).
  void apply_threads() const {
    loopus::cpu::set_threads(threads);
    (void)loopus::cpu::active_isa();
  }
  ModelLoadOptions load_options() const {
    ModelLoadOptions o;
    o.mode = mmap ? io::LoadMode::kMmap : io::LoadMode::kRead;
    if (dtype == "f32") o.weights.matrix_dtype = DType::kF32;
    if (dtype == "f16") o.weights.matrix_dtype = DType::kF16;
    if (dtype == "bf16") o.weights.matrix_dtype = DType::kBF16;
    o.weights.dequantize = dequantize;
    return o;
  }
  io::OpenModelOptions open_options(bool need_tokenizer = true) const {
    io::OpenModelOptions o;
    o.load = load_options();
    o.tokenizer = tokenizer;
    o.need_tokenizer = need_tokenizer;
    return o;
  }
};

/// Loop options shared by info, generate, perplexity and bench: split, B, gate, halting, cache.
struct LoopArgs {
  std::string enc, dec;
  LoopRunSpec spec;
  std::vector<CLI::Option*> opts;

  /// Was any loop option given on the command line?
  bool given() const {
    for (auto* o : opts)
      if (o->count() > 0) return true;
    return false;
  }

  /// per_run: add --loops and --cache (bench takes lists of those instead).
  void add_to(CLI::App& app, bool per_run = true) {
    opts = {
        app.add_option("--encoder-layers", enc,
                       "recast: encoder layers, official syntax: a..b or a-b (inclusive), k.. or k- (k to the last), k "
                       "(= 0..k), i,j,... (exactly those), none"),
        app.add_option("--decoder-layers", dec,
                       "recast: decoder layers (same syntax); the reasoning block is the rest"),
        app.add_option("--min-loops", spec.min_loops, "no early exit before this many loops")
            ->check(CLI::Range(1, 1024)),
        app.add_option("--gate", spec.gate,
                       "selective (checkpoint's gate, or a fresh official-init gate), none (h <- p), mix:ALPHA; "
                       "default: selective when the checkpoint has one, else none"),
        app.add_option("--halt", spec.halt,
                       "fixed | q:THR | cdf:THR | conv:EPS | kl:EPS (default: the checkpoint's rule, else fixed)"),
        app.add_option("--q-eval-interval", spec.q_eval_interval, "check q every k loops (default: checkpoint's)")
            ->check(CLI::Range(1, 1024)),
        app.add_flag("--q-on-delta", spec.q_on_delta, "q head reads p - h (training path) instead of the state h"),
        app.add_option("--exit-fill", spec.exit_fill,
                       "after an early exit, the deeper per-depth caches are: drop (official, default: thrown away) or "
                       "latest (filled with the last depth's rows)")
            ->check(CLI::IsMember({"latest", "drop"})),
        app.add_option("--gate-seed", spec.gate_seed, "seed of a fresh selective gate"),
    };
    if (per_run) {
      opts.push_back(app.add_option("--loops", spec.loops, "B: maximum loop iterations of the reasoning block (default 8)")
                         ->check(CLI::Range(1, 1024)));
      opts.push_back(app.add_option("--cache", spec.cache, "reasoning KV cache: per-depth (exact), shared (B x smaller), none")
                         ->check(CLI::IsMember({"per-depth", "shared", "none"})));
    }
  }
};

/// --backend and --device, for every subcommand that runs a model: the CPU backend, the slow scalar
/// reference ops (an oracle for checking the fast path), or an NVIDIA GPU (builds with loopus::cuda).
struct BackendArgs {
  std::string backend = "cpu";
  int device = 0;

  /// gpu: whether the subcommand runs on CUDA (inference); training (adapt) is host-only for now.
  void add_to(CLI::App& app, bool gpu = true) {
    add_to(app,
           gpu ? "cpu (default), cuda (an NVIDIA GPU, --device), or reference (slow scalar oracle)"
               : "cpu (default) or reference (slow scalar oracle)",
           gpu);
  }
  void add_to(CLI::App& app, const std::string& what, bool gpu) {
    app.add_option("--backend", backend, what)
        ->check(gpu ? CLI::IsMember({"cpu", "cuda", "reference"}) : CLI::IsMember({"cpu", "reference"}));
    if (gpu)
      app.add_option("--device", device, "CUDA device index with --backend cuda (default 0)")
          ->check(CLI::NonNegativeNumber);
  }
  /// Calls fn.template operator()<Backend>() for the chosen backend (Reference, Cpu or Cuda).
  template <class Fn>
  decltype(auto) dispatch(Fn&& fn) const {
    if (backend == "cuda") {
#if defined(LOOPUS_HAS_CUDA)
      cuda::select_device(device);
      return fn.template operator()<Cuda>();
#else
      throw UsageError(
          "--backend cuda: this loopus was built without the CUDA backend (configure with "
          "-DLOOPUS_CUDA=ON where the CUDA toolkit is installed)");
#endif
    }
    return dispatch_host(std::forward<Fn>(fn));
  }
  /// One line on where the model runs: CPU threads and kernel level, or the GPU.
  std::string describe() const {
    if (backend == "cuda") {
#if defined(LOOPUS_HAS_CUDA)
      cuda::select_device(device);
      const cuda::DeviceInfo d = cuda::current_device();
      return "cuda device " + std::to_string(d.index) + " (" + d.name + ", " + std::to_string(d.sm_count) + " SMs)";
#else
      return "cuda (not built)";
#endif
    }
    return "threads " + std::to_string(omp_get_max_threads()) + " | kernels " + cpu::isa_name(cpu::active_isa()) +
           (backend == "reference" ? " | reference ops" : "");
  }
  /// The same for host-only work (training): Reference or Cpu.
  template <class Fn>
  decltype(auto) dispatch_host(Fn&& fn) const {
    if (backend == "reference") return fn.template operator()<Reference>();
    return fn.template operator()<Cpu>();
  }
};

/// A model opened for running (io::open_model): recast when loop options were given.
using RunnableModel = io::OpenedModel;

inline RunnableModel open_runnable(const ModelArgs& a, const LoopArgs& loop, bool need_tokenizer = true) {
  io::OpenModelOptions o = a.open_options(need_tokenizer);
  o.recast = loop.given();
  o.encoder_layers = loop.enc;
  o.decoder_layers = loop.dec;
  return io::open_model(a.model, o);
}

}  // namespace loopus::cli
