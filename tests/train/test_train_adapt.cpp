// Adaptation loop: AdamW and schedule, data pipeline, bit-exact resume, crash-safe checkpoints, learning.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <thread>
#include <vector>

#include <omp.h>

#include "loopus/io/gguf.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/tokenizer/load.hpp"
#include "loopus/tokenizer/spm.hpp"
#include "loopus/train/adapt.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
using namespace loopus::train;
using loopus::test::ptr;
using loopus::test::span_of;

namespace {

SynthParams tiny(uint64_t seed, int vocab = 32) { return test::tiny_params(seed, Arch::kLlama, vocab); }
using test::random_ids;

/// Runs `steps` batches of a fresh adapter (resuming from `from` when given,
/// saving to `to` when given) and returns every trained value, bit for bit.
std::vector<float> run(const std::shared_ptr<const LoopedWeights>& lw, const PackedData& data, const AdaptConfig& cfg,
                       int steps, const std::string& from, const std::string& to, std::vector<float>* moments = nullptr) {
  TrainModel<Cpu, float> m(lw, TrainSelect{}, 9);
  Adapter<Cpu, float> a(m, data, cfg);
  if (!from.empty()) a.load(from);
  for (int i = 0; i < steps; ++i) a.step();
  if (!to.empty()) a.save(to);
  std::vector<float> out;
  for (const auto& p : m.params())
    if (p.trainable) {
      out.insert(out.end(), ptr(p.w), ptr(p.w) + p.numel());
      out.insert(out.end(), ptr(p.g), ptr(p.g) + p.numel());
    }
  (void)moments;
  return out;
}

/// Perplexity of `data` computed apart from the trainer: all-position logits of
/// each sequence from the inference model (loops = 0: the plain CausalLM on the
/// base; else LoopedModel with `loops` fixed gated iterations), then a scalar
/// log-softmax and the shifted cross-entropy over the labelled positions.
double perplexity_by_hand(const std::shared_ptr<const LoopedWeights>& lw, const PackedData& data, int loops) {
  const int64_t T = data.seq_len(), V = lw->base->hp.n_vocab;
  const ContextParams cp{T, T};
  LoopParams lp;
  lp.halting.max_loops = std::max(loops, 1);
  CausalLM<Cpu> plain(lw->base, cp);
  LoopedModel<Cpu, SelectiveGate, NoCache> looped(lw, lp, cp, SelectiveGate(lw->gate));
  std::vector<float> logits(size_t(T * V));
  std::vector<int32_t> labels(static_cast<size_t>(T));
  double nll = 0;
  int64_t n = 0;
  for (int64_t s = 0; s < data.size(); ++s) {
    const std::span<const int32_t> ids(data.seq(s), size_t(T));
    data.labels(s, labels.data());
    if (loops == 0) {
      plain.reset();
      plain.eval(ids, logits.data(), true);
    } else {
      looped.reset();
      looped.eval(ids, logits.data(), true);
    }
    for (int64_t t = 0; t + 1 < T; ++t) {
      const int32_t y = labels[size_t(t + 1)];  // position t predicts token t + 1
      if (y < 0) continue;
      const float* row = logits.data() + t * V;
      double mx = -INFINITY, z = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      nll += mx + std::log(z) - double(row[y]);
      ++n;
    }
  }
  REQUIRE_GT(n, 0);
  return std::exp(nll / double(n));
}

}  // namespace

TEST_CASE("[loopus] train adapt: AdamW follows torch.optim.AdamW, decay only on Linear weights, clipping") {
  auto lw = test::synth_loopus(tiny(51), "0..0", "3..3");
  TrainModel<Cpu, double> m(lw, TrainSelect{});
  AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  AdamW<Cpu, double> opt(m, cfg);
  Param<Cpu, double>* w = m.find("reasoning.layers.0.self_attn.q_proj.weight");
  Param<Cpu, double>* g = m.find("reasoning.layers.0.input_layernorm.weight");
  Param<Cpu, double>* A = m.find("reasoning.gate.A_log");
  REQUIRE((w && g && A));
  CHECK(w->decay);
  CHECK_FALSE(g->decay);
  CHECK_FALSE(A->decay);
  const double w0 = ptr(w->w)[3], g0 = ptr(g->w)[2];
  double mm = 0, vv = 0, ww = w0, gg = g0, mg = 0, vg = 0;
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    const double grad = 0.5 * t - 0.3, gradg = -0.2 * t;
    ptr(w->g)[3] = grad;
    ptr(g->g)[2] = gradg;
    opt.step(lr);
    // torch: p *= 1 - lr*wd; m, v; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.999, t);
    ww *= 1 - lr * 0.1;
    mm = 0.9 * mm + 0.1 * grad;
    vv = 0.999 * vv + 0.001 * grad * grad;
    ww -= lr / bc1 * mm / (std::sqrt(vv) / std::sqrt(bc2) + 1e-8);
    mg = 0.9 * mg + 0.1 * gradg;
    vg = 0.999 * vg + 0.001 * gradg * gradg;
    gg -= lr / bc1 * mg / (std::sqrt(vg) / std::sqrt(bc2) + 1e-8);
    CHECK_EQ(ptr(w->w)[3], doctest::Approx(ww).epsilon(1e-13));
    CHECK_EQ(ptr(g->w)[2], doctest::Approx(gg).epsilon(1e-13));
    CHECK_EQ(ptr(w->g)[3], 0.0);  // step() clears the gradients
  }
  CHECK_EQ(opt.steps(), 3);
  // clipping scales the whole gradient to the clip norm
  AdamWConfig c2;
  c2.clip = 1.0;
  TrainModel<Cpu, double> m2(lw, TrainSelect{});
  AdamW<Cpu, double> o2(m2, c2);
  ptr(m2.find("decoder.norm.weight")->g)[0] = 3.0;
  ptr(m2.find("decoder.norm.weight")->g)[1] = 4.0;
  CHECK_EQ(o2.grad_norm(), doctest::Approx(5.0));
  CHECK_EQ(o2.step(0.1), doctest::Approx(5.0));
  CHECK_EQ(o2.state()[0].m.numel(), o2.state()[0].p->numel());
  const auto* mom = ptr(o2.state()[size_t(std::find_if(o2.state().begin(), o2.state().end(),
                                                       [](auto& s) { return s.p->name == "decoder.norm.weight"; }) -
                                          o2.state().begin())]
                            .m);
  CHECK_EQ(mom[0], doctest::Approx(0.1 * 3.0 / (5.0 + 1e-6)));
  // a parameter group: the gate's learning rate is scaled (first Adam step moves by lr·mult·sign(g))
  TrainModel<Cpu, double> m3(lw, TrainSelect{});
  m3.set_gate_lr_mult(10);
  AdamWConfig c3;
  c3.weight_decay = 0;
  AdamW<Cpu, double> o3(m3, c3);
  Param<Cpu, double>* gb = m3.find("reasoning.gate.delta_proj.bias");
  Param<Cpu, double>* nw = m3.find("decoder.norm.weight");
  const double b0 = ptr(gb->w)[0], n0 = ptr(nw->w)[0];
  ptr(gb->g)[0] = 0.5;
  ptr(nw->g)[0] = 0.5;
  o3.step(1e-3);
  CHECK_EQ(ptr(gb->w)[0] - b0, doctest::Approx(-1e-2).epsilon(1e-6));
  CHECK_EQ(ptr(nw->w)[0] - n0, doctest::Approx(-1e-3).epsilon(1e-6));
}

TEST_CASE("[loopus] train adapt: token-driven warm-up + cosine schedule") {
  LrSchedule s{1e-3, 0.1, 100, 1100};
  CHECK_EQ(s.at(0), 0.0);
  CHECK_EQ(s.at(50), doctest::Approx(5e-4));
  CHECK_EQ(s.at(100), doctest::Approx(1e-3));
  CHECK_EQ(s.at(600), doctest::Approx(1e-4 + 0.9e-3 * 0.5));
  CHECK_EQ(s.at(1100), doctest::Approx(1e-4));
  CHECK_EQ(s.at(5000), doctest::Approx(1e-4));
  for (double t = 100; t < 1100; t += 50) CHECK_GE(s.at(t), s.at(t + 50));
}

TEST_CASE("[loopus] train adapt: documents, BOS per document, split by lines, packing, shuffling") {
  const std::vector<std::string> lines = {"a b", "c", "", "", "d e", "", "f"};
  CHECK_EQ(documents(lines, 0, lines.size(), false, DocSplit::kBlankLine, "x"),
           std::vector<std::string>{"a b\nc", "d e", "f"});
  CHECK_EQ(documents(lines, 0, lines.size(), false, DocSplit::kLine, "x"),
           std::vector<std::string>{"a b", "c", "d e", "f"});
  CHECK_EQ(documents(lines, 4, 7, false, DocSplit::kBlankLine, "x"), std::vector<std::string>{"d e", "f"});
  const std::vector<std::string> jl = {R"({"text": "one"})", "", R"({"text": "two", "id": 3})"};
  CHECK_EQ(documents(jl, 0, jl.size(), true, DocSplit::kBlankLine, "x"), std::vector<std::string>{"one", "two"});
  const std::vector<std::string> bad = {R"({"txt": "one"})"};
  CHECK_THROWS_WITH_AS(documents(bad, 0, 1, true, DocSplit::kBlankLine, "f.jsonl"), doctest::Contains("f.jsonl:1"), Error);
  CHECK_THROWS_AS(parse_doc_split("para"), Error);

  auto f = io::open_gguf(test::data_file("models/stories260K/stories260K.gguf"));
  auto tok = load_tokenizer_from_gguf_meta(f.meta, f.path);
  auto ids = tokenize_documents({"Once upon a time", "The end"}, *tok);
  CHECK_EQ(ids[0], tok->bos_id());
  const auto a = tok->encode("Once upon a time", false, false), b = tok->encode("The end", false, false);
  REQUIRE_EQ(ids.size(), a.size() + b.size() + 2);
  CHECK_EQ(ids[a.size() + 1], tok->bos_id());

  const auto dir = test::temp_dir("train_corpus");
  {
    std::ofstream o(dir / "c.txt");
    for (int i = 0; i < 10; ++i) o << "Line number " << i << ".\n\n";
  }
  auto c = load_corpus((dir / "c.txt").string(), "", 20, *tok, DocSplit::kBlankLine);
  CHECK_EQ(c.train_lines, 16);
  CHECK_EQ(c.val_lines, 4);
  CHECK_EQ(c.train_docs, 8);
  CHECK_EQ(c.val_docs, 2);
  CHECK_EQ(c.val, tokenize_documents({"Line number 8.", "Line number 9."}, *tok));

  PackedData pd(random_ids(103, 50, 1), 10);
  CHECK_EQ(pd.size(), 10);
  Batcher b1(pd, 3, 7), b2(pd, 3, 7), b3(pd, 3, 8);
  std::vector<int32_t> x1(30), x2(30), x3(30);
  std::vector<int> seen(10, 0);
  bool differs = false;
  for (int k = 0; k < 3; ++k) {  // first epoch: 9 of the 10 sequences, no repeats
    b1.next(x1.data());
    b2.next(x2.data());
    b3.next(x3.data());
    CHECK_EQ(x1, x2);
    differs |= x1 != x3;
    for (int s = 0; s < 3; ++s)
      for (int64_t i = 0; i < pd.size(); ++i)
        if (std::equal(x1.begin() + s * 10, x1.begin() + s * 10 + 10, pd.seq(i))) ++seen[size_t(i)];
  }
  CHECK(differs);
  for (int v : seen) CHECK_LE(v, 1);
  const auto st = b1.state();
  b1.next(x1.data());
  Batcher b4(pd, 3, 7);
  b4.set_state(st);
  b4.next(x2.data());
  CHECK_EQ(x1, x2);  // resumes across an epoch boundary
  CHECK_EQ(b1.state().epoch, 1);
  CHECK_THROWS_WITH_AS(Batcher(pd, 11, 0), doctest::Contains("batch = 11"), Error);
}

TEST_CASE("[loopus] train adapt: padded layout, one document per sequence (the official --pad)") {
  // documents of 1 (skipped: nothing to predict), 5, 12 (truncated to 8) and 8 tokens
  std::vector<int32_t> stream;
  std::vector<int64_t> starts;
  for (int n : {1, 5, 12, 8}) {
    starts.push_back(int64_t(stream.size()));
    for (int i = 0; i < n; ++i) stream.push_back(int32_t(100 * n + i));
  }
  const auto pd = PackedData::padded(stream, starts, 8, -7);
  REQUIRE_EQ(pd.size(), 3);
  CHECK(pd.padded());
  CHECK_EQ(pd.valid(0), 5);
  CHECK_EQ(pd.valid(1), 8);
  CHECK_EQ(pd.valid(2), 8);
  CHECK_EQ(pd.tokens(), 21);
  CHECK_EQ(std::vector<int32_t>(pd.seq(0), pd.seq(0) + 8), std::vector<int32_t>{500, 501, 502, 503, 504, -7, -7, -7});
  CHECK_EQ(std::vector<int32_t>(pd.seq(1), pd.seq(1) + 8),
           std::vector<int32_t>{1200, 1201, 1202, 1203, 1204, 1205, 1206, 1207});
  std::vector<int32_t> lab(8);
  pd.labels(0, lab.data());
  CHECK_EQ(lab, std::vector<int32_t>{500, 501, 502, 503, 504, -100, -100, -100});
  const auto h = pd.head(2);
  CHECK_EQ(h.size(), 2);
  CHECK_EQ(h.valid(0), 5);
  // the batcher hands out labels with the ids; packed data gets labels = ids
  Batcher bt(pd, 3, 1);
  std::vector<int32_t> x(24), y(24);
  bt.next(x.data(), y.data());
  for (size_t i = 0; i < 24; ++i) CHECK(y[i] == (x[i] == -7 ? -100 : x[i]));
  PackedData pk(random_ids(35, 50, 2), 10);
  CHECK_FALSE(pk.padded());
  CHECK_EQ(pk.tokens(), 30);
  Batcher bp(pk, 2, 1);
  std::vector<int32_t> u(20), v(20);
  bp.next(u.data(), v.data());
  CHECK_EQ(u, v);
  // the run's config must say pad for padded data, and match seq_len
  auto lw = test::synth_loopus(test::tiny_params(3), "0..0", "3..3");
  TrainModel<Cpu, float> m(lw, TrainSelect{});
  AdaptConfig cfg;
  cfg.batch = 2;
  cfg.seq_len = 8;
  cfg.max_steps = 1;
  const auto small = PackedData::padded(random_ids(30, 32, 4), {0, 6, 13, 20, 27}, 8, 0);  // ids in the vocabulary
  CHECK_THROWS_WITH_AS((Adapter<Cpu, float>(m, small, cfg)), doctest::Contains("padded"), Error);
  cfg.pad = true;
  cfg.seq_len = 10;
  CHECK_THROWS_WITH_AS((Adapter<Cpu, float>(m, small, cfg)), doctest::Contains("sequences of 8"), Error);
  cfg.seq_len = 8;
  Adapter<Cpu, float> ad(m, small, cfg);
  const auto rec = ad.step();
  CHECK(std::isfinite(rec.micro.back().loss));
}

TEST_CASE("[loopus] train adapt: N steps straight == N/2 + resume + N/2, bit for bit (one thread)") {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto lw = test::synth_loopus(tiny(52), "0..0", "3..3");
  PackedData data(random_ids(20 * 12, 32, 2), 12);
  for (bool no_loop : {false, true}) {
    CAPTURE(no_loop);
    AdaptConfig cfg;
    cfg.batch = 3;
    cfg.seq_len = 12;
    cfg.accum = 3;  // updates straddle batches: pending gradients must survive the checkpoint
    cfg.max_steps = 8;
    cfg.lr = 3e-3;
    cfg.warmup = 0.25;
    cfg.adam.clip = 0.5;
    cfg.step.n_steps = 6;
    cfg.step.n_supervision = 2;
    cfg.no_loop = no_loop;
    cfg.seed = 11;
    const auto dir = test::temp_dir("train_resume");
    const auto straight = run(lw, data, cfg, 8, "", "");
    run(lw, data, cfg, 4, "", (dir / "state.bin").string());
    const auto resumed = run(lw, data, cfg, 4, (dir / "state.bin").string(), "");
    REQUIRE_EQ(straight.size(), resumed.size());
    CHECK_EQ(std::memcmp(straight.data(), resumed.data(), straight.size() * sizeof(float)), 0);
    // and the run did change the weights
    const auto start = run(lw, data, cfg, 0, "", "");
    CHECK_NE(std::memcmp(straight.data(), start.data(), straight.size() * sizeof(float)), 0);
    // another seed gives another run; a changed setting is refused on resume
    AdaptConfig other = cfg;
    other.lr = 1e-3;
    TrainModel<Cpu, float> m(lw, TrainSelect{}, 9);
    Adapter<Cpu, float> a(m, data, other);
    CHECK_THROWS_WITH_AS(a.load((dir / "state.bin").string()), doctest::Contains("lr"), Error);
  }
  omp_set_num_threads(threads);
}

TEST_CASE("[loopus] train adapt: killing the process during checkpoint writes never leaves a bad latest checkpoint") {
  const auto dir = test::temp_dir("train_kill");
  const std::string path = (dir / "state.bin").string();
  // ~6 MB per checkpoint so that kills land inside writes
  const size_t n = size_t(1) << 20;
  std::vector<float> payload(n);
  int torn_seen = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // child: rewrite the checkpoint forever; version k holds values k + i
      for (uint64_t k = uint64_t(round) * 1000;; ++k) {
        for (size_t i = 0; i < n; ++i) payload[i] = float(k) + float(i % 97);
        write_checkpoint(path, {{"k", k}}, {{"a", payload.data(), n * 4}, {"b", payload.data(), n * 2}});
      }
    }
    // parent: wait for a first complete file of this round, then kill at a random moment
    for (int w = 0; w < 2000; ++w) {
      if (std::filesystem::exists(path)) {
        try {
          if (LoadedCheckpoint::read(path).state().at("k").get<uint64_t>() >= uint64_t(round) * 1000) break;
        } catch (const Error&) {
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3 + (round * 37) % 40));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) {
        ++torn_seen;  // the kill hit a write in progress: its temp file is left behind
        std::filesystem::remove(e.path());
      }
    // the latest checkpoint is present, verifies, and is one complete version
    REQUIRE(std::filesystem::exists(path));
    const auto c = LoadedCheckpoint::read(path);
    const uint64_t k = c.state().at("k").get<uint64_t>();
    CHECK_GE(k, uint64_t(round) * 1000);
    // blobs sit at any byte offset of the file: copy them out before reading floats
    std::vector<float> a(n), b(n / 2);
    std::memcpy(a.data(), c.blob("a", n * 4), n * 4);
    std::memcpy(b.data(), c.blob("b", n * 2), n * 2);
    bool ok = true;
    for (size_t i = 0; i < n; i += 4099) ok &= a[i] == float(k) + float(i % 97);
    for (size_t i = 0; i < n / 2; i += 4099) ok &= b[i] == float(k) + float(i % 97);
    CHECK(ok);
  }
  MESSAGE("kills that interrupted a checkpoint write: " << torn_seen << " of 12");
  CHECK_GT(torn_seen, 0);  // the test did hit writes in progress
  // a torn file is rejected, never read as a checkpoint
  {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> all((std::istreambuf_iterator<char>(in)), {});
    std::ofstream out((dir / "torn.bin").string(), std::ios::binary);
    out.write(all.data(), std::streamsize(all.size() / 2));
  }
  CHECK_THROWS_WITH_AS(LoadedCheckpoint::read((dir / "torn.bin").string()), doctest::Contains("torn"), Error);
}

TEST_CASE("[loopus] train adapt: the looped model learns a repeating sequence, perplexity evaluation") {
  auto lw = test::synth_loopus(tiny(53, 24), "0..0", "3..3");
  std::vector<int32_t> ids;
  for (int i = 0; i < 40 * 16; ++i) ids.push_back(int32_t((i * 7) % 24));
  PackedData data(ids, 16);
  TrainModel<Cpu, float> m(lw, TrainSelect{}, 3);
  const double before1 = perplexity(m, data, 4, 1), before0 = perplexity(m, data, 4, 0);
  CHECK_EQ(before0, doctest::Approx(perplexity_by_hand(lw, data, 0)).epsilon(1e-4));  // the plain base model
  CHECK_EQ(before1, doctest::Approx(perplexity_by_hand(lw, data, 1)).epsilon(1e-4));
  AdaptConfig cfg;
  cfg.batch = 4;
  cfg.seq_len = 16;
  cfg.max_steps = 30;
  cfg.lr = 1e-2;
  cfg.gate_lr_mult = 1;  // the recipe this bound was set for (the default became 100 later)
  cfg.step.n_steps = 6;
  cfg.step.n_supervision = 2;
  Adapter<Cpu, float> a(m, data, cfg);
  double first = 0, last = 0;
  while (!a.done()) {
    auto r = a.step();
    CHECK_EQ(r.micro.size(), 2u);
    if (r.step == 1) first = r.micro[0].lm;
    last = r.micro.back().lm;
  }
  CHECK_EQ(a.tokens_done(), 30 * 64);
  CHECK_EQ(a.updates(), 60);
  CHECK_LT(last, 0.5 * first);
  const double after4 = perplexity(m, data, 4, 4);
  CHECK_LT(after4, 0.2 * before1);
  CHECK_GT(before0, 1.0);
  // 7 sequences in batches of 4: the padding rows of the last batch count nothing
  PackedData seven(std::vector<int32_t>(ids.begin(), ids.begin() + 7 * 16), 16);
  PackedData four(std::vector<int32_t>(ids.begin(), ids.begin() + 4 * 16), 16);
  // the data repeats with period 24 tokens: all 16-token windows at offsets 0 mod 48 look alike
  CHECK_EQ(perplexity(m, seven, 4, 2), doctest::Approx(perplexity(m, seven, 7, 2)).epsilon(1e-5));
  // the trained model's perplexity equals the one computed from the inference model's logits
  const auto trained = m.export_looped();
  CHECK_EQ(perplexity(m, four, 4, 2), doctest::Approx(perplexity_by_hand(trained, four, 2)).epsilon(1e-4));
  CHECK_EQ(after4, doctest::Approx(perplexity_by_hand(trained, data, 4)).epsilon(1e-4));
}
