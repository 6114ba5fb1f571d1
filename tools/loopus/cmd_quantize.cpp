// loopus quantize: write a model's weight matrices as Q8_0 / Q4_0 / Q4_1 / Q4_K / Q5_K / Q6_K / F16 / BF16 / F32 GGUF.
// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/io/quantize_model.hpp"

namespace loopus::cli {

void register_quantize(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "quantize",
      "write a model (GGUF, HF folder, llama2.c .bin, or a LoopUS checkpoint) as a GGUF whose weight matrices are "
      "quantized to one type, bit for bit as llama-quantize --pure writes them (docs/quantization.md)");
  struct Args {
    std::string model, type, out, keep, fallback;
    int threads = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("-m,--model", a->model, "the model to quantize (never overwritten)")->required();
  sub->add_option("--type", a->type, "Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, F16, BF16 or F32 (any case)")->required();
  sub->add_option("--out", a->out, "the GGUF file to write (atomically)")->required();
  sub->add_option("--keep", a->keep,
                  "comma-separated tensors kept at their input precision: GGUF tensor-name globs (token_embd.weight, "
                  "blk.3.*, blk.*.attn_v.weight) or, for a LoopUS checkpoint, encoder, reasoning, decoder");
  sub->add_option("--fallback", a->fallback,
                  "type for matrices whose rows are not whole blocks of --type (default: Q8_0 for the K-quants when "
                  "rows are whole 32-blocks, else F16)");
  sub->add_option("-t,--threads", a->threads, "threads (default: all cores)")->check(CLI::Range(1, 4096));
  sub->add_flag("--json", a->json, "print the summary, with every matrix's input and output type, as JSON");
  sub->callback([a] {
    QuantizeOptions o;
    o.type = parse_quant_type(a->type, "--type");
    if (!a->fallback.empty()) o.fallback = parse_quant_type(a->fallback, "--fallback");
    o.keep = split_list(a->keep);
    if (!a->keep.empty() && o.keep.empty()) throw UsageError("--keep '" + a->keep + "' names no tensor");
    o.threads = a->threads;
    const bool tty = !a->json && ::isatty(2);
    if (tty)
      o.progress = [](const QuantizeProgress& p) {
        std::fprintf(stderr, "\r\033[K[%zu/%zu] %s", p.index, p.count, p.name.c_str());
        std::fflush(stderr);
      };
    const QuantizeResult r = quantize_model(a->model, a->out, o);
    if (tty) std::fprintf(stderr, "\r\033[K");
    std::map<std::string, int> by_type;
    int kept = 0;
    nlohmann::json mats = nlohmann::json::array();
    for (const auto& m : r.matrices) {
      ++by_type[std::string(dtype_name(m.to))];
      kept += m.kept;
      mats.push_back({{"name", m.name},
                      {"shape", {m.rows, m.cols}},
                      {"from", dtype_name(m.from)},
                      {"to", dtype_name(m.to)},
                      {"kept", m.kept},
                      {"fallback", m.fell_back}});
    }
    if (a->json) {
      nlohmann::json j = {{"model", a->model},
                          {"out", a->out},
                          {"format", r.format},
                          {"looped", r.looped},
                          {"type", dtype_name(o.type)},
                          {"vocab", r.has_vocab},
                          {"matrix_bytes_in", r.matrix_bytes_in},
                          {"matrix_bytes_out", r.matrix_bytes_out},
                          {"matrices", mats}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::string types;
      for (const auto& [t, n] : by_type) types += (types.empty() ? "" : ", ") + std::to_string(n) + " " + t;
      std::printf("wrote %s: %zu matrices (%s; %d kept), %.2f MB -> %.2f MB of matrices%s\n", a->out.c_str(),
                  r.matrices.size(), types.c_str(), kept, double(r.matrix_bytes_in) / 1e6,
                  double(r.matrix_bytes_out) / 1e6, r.looped ? ", loop metadata, f32 gate and q head" : "");
    }
    if (!r.has_vocab)
      std::fprintf(stderr,
                   "note: %s carries no vocabulary (the %s input keeps its tokenizer in a separate file); run it "
                   "with --tokenizer FILE\n",
                   a->out.c_str(), r.format.c_str());
  });
}

}  // namespace loopus::cli
