// The adaptation driver: a run's files and records, the callbacks, refusing to overwrite, an
// interrupted or failed run resumed to the same files as an uninterrupted one, the worse-than-original
// warnings, log trimming.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <omp.h>
#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/train/driver.hpp"
#include "test_util.hpp"

using namespace loopus;
using namespace loopus::train;
namespace fs = std::filesystem;

namespace {

/// A short run of stories260K recast 0..0 | 1..3 | 4..4 on TinyStories.
AdaptRunOptions small_run(const fs::path& out, int64_t steps) {
  AdaptRunOptions o;
  o.model = test::data_file("models/stories260K/stories260K.gguf");
  o.data = test::data_file("text/tinystories/tinystories_validation_first1000.txt");
  o.val_percent = 20;
  o.encoder_layers = "0..0";
  o.decoder_layers = "4..4";
  o.out = out.string();
  o.cfg.seq_len = 32;
  o.cfg.batch = 2;
  o.cfg.max_steps = steps;
  o.ckpt_every = 2;
  o.eval_loops = {1, 2};
  o.eval_max_seqs = 4;
  return o;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> v;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
  return v;
}

/// A record of log.jsonl or summary.json without what depends on the clock or the folder.
nlohmann::json untimed(nlohmann::json j) {
  for (const char* k : {"seconds", "step_seconds", "tokens_per_s", "generate"}) j.erase(k);
  return j;
}

/// The warnings a finished run wrote into its summary.json.
std::vector<std::string> run_adaptation_warnings(const fs::path& run) {
  return nlohmann::json::parse(test::read_text(run / "summary.json"))["warnings"].get<std::vector<std::string>>();
}

/// Two finished runs of the same settings in folders a and b wrote the same files: the log records and
/// the summary equal (timings aside), the model files equal byte for byte.
void check_same_run(const fs::path& a, const fs::path& b) {
  const auto la = read_jsonl(a / "log.jsonl"), lb = read_jsonl(b / "log.jsonl");
  REQUIRE(la.size() == lb.size());
  for (size_t i = 0; i < la.size(); ++i) CHECK_MESSAGE(untimed(la[i]) == untimed(lb[i]), "log record " << i);
  CHECK(untimed(nlohmann::json::parse(test::read_text(a / "summary.json"))) ==
        untimed(nlohmann::json::parse(test::read_text(b / "summary.json"))));
  for (const char* f : {"model.safetensors", "config.json", "model.gguf"})
    CHECK_MESSAGE(test::read_text(a / f) == test::read_text(b / f), f << " differs");
  CHECK(test::temp_files_in(b).empty());
}

/// Runs with one OpenMP thread (a resumed run is bit-exact only then).
struct OneThread {
  int saved = omp_get_max_threads();
  OneThread() { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_CASE("[loopus] train: worse_than_original names every result not better than the original") {
  nlohmann::json by = {{"1", 9.5}, {"4", 10.25}, {"8", std::numeric_limits<double>::quiet_NaN()}};
  const auto w = worse_than_original(10.0, by, false, 99.0);  // plain_ppl only counts for the no-loop control
  REQUIRE(w.size() == 2);
  CHECK(w[0] == "the adapted model's B = 4 held-out perplexity 10.2500 is worse than the original model's 10.0000");
  CHECK(w[1].find("B = 8 held-out perplexity nan") != std::string::npos);
  CHECK(worse_than_original(10.0, {{"2", 10.0}}, false, 0).empty());  // as good is not worse
  const auto c = worse_than_original(3.0, nlohmann::json::object(), true, 3.5);
  REQUIRE(c.size() == 1);
  CHECK(c[0] == "the fine-tuned model's held-out perplexity 3.5000 is worse than the original model's 3.0000");
}

TEST_CASE("[loopus] train: trim_log keeps the records up to a step and drops a torn line") {
  const auto dir = test::temp_dir("driver_trim");
  const fs::path p = dir / "log.jsonl";
  std::ofstream(p) << "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4,\"tok";
  CHECK(trim_log(p, 2) == 2);
  CHECK(test::read_text(p) == "{\"step\":1}\n{\"step\":2}\n");
  std::ofstream(p) << "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"ste";
  CHECK(trim_log(p, 9) == 3);
  CHECK(test::read_text(p) == "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
  // a last record without its newline was cut short, even when what is there parses
  std::ofstream(p) << "{\"step\":1}\n{\"step\":2}";
  CHECK(trim_log(p, 9) == 1);
  CHECK(test::read_text(p) == "{\"step\":1}\n");
  CHECK(test::temp_files_in(dir).empty());
  CHECK(trim_log(dir / "absent.jsonl", 1) == 0);  // nothing to do
  CHECK_FALSE(fs::exists(dir / "absent.jsonl"));
}

TEST_CASE("[loopus] train: run_adaptation writes the run folder, reports, and resumes an interrupted run") {
  OneThread one;
  const auto dir = test::temp_dir("driver_run");

  // ---- one run straight through
  int starts = 0, originals = 0, trained = 0;
  std::vector<int64_t> steps;
  std::vector<bool> finals;
  AdaptCallbacks cb;
  cb.on_start = [&](const AdaptStart& s) {
    ++starts;
    CHECK(s.split == "0..0 | 1..3 | 4..4");
    CHECK(s.seq_len == 32);
    CHECK(s.train_tokens == s.train_seqs * 32);
    CHECK(s.trainable > 0);
  };
  cb.on_original = [&](double ppl, double) {
    ++originals;
    CHECK(ppl > 1);
  };
  cb.on_step = [&](const AdaptProgress& p) {
    steps.push_back(p.rec.step);
    finals.push_back(p.final);
    CHECK(p.total == 6);
    CHECK(p.rec.tokens == p.rec.step * 64);
  };
  cb.on_trained = [&](double) { ++trained; };
  const auto a = run_adaptation<Cpu>(small_run(dir / "a", 6), cb);
  CHECK(starts == 1);
  CHECK(originals == 1);
  CHECK(trained == 1);
  CHECK(steps == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  CHECK(finals == std::vector<bool>{false, false, false, false, false, true});

  const auto& s = a.summary;
  CHECK(s["steps"] == 6);
  CHECK(s["tokens"] == 6 * 2 * 32);
  CHECK(s["split"] == "0..0 | 1..3 | 4..4");
  CHECK(s["adapted_ppl_by_loops"].size() == 2);
  CHECK(s["warnings"].size() == a.warnings.size());
  // the saved model, run by LoopedModel, scores as the training path does
  const auto& ic = s["inference_check"];
  CHECK(ic["loops"] == 2);
  CHECK(ic["ppl_saved_model_looped_model"].get<double>() ==
        doctest::Approx(ic["ppl_training_path"].get<double>()).epsilon(1e-3));
  // the source GGUF has a vocabulary: model.gguf carries it, so generation needs no tokenizer flag
  CHECK(fs::exists(dir / "a" / "model.gguf"));
  CHECK(s["generate"] == "loopus generate -m " + (dir / "a" / "model.gguf").string());
  for (const char* f : {"config.json", "model.safetensors", "train_state.bin", "summary.json"})
    CHECK_MESSAGE(fs::exists(dir / "a" / f), f);
  CHECK(nlohmann::json::parse(test::read_text(dir / "a" / "summary.json")) == s);
  const auto log = read_jsonl(dir / "a" / "log.jsonl");
  REQUIRE(log.size() == 6);
  for (size_t i = 0; i < log.size(); ++i) CHECK(log[i]["step"] == int64_t(i) + 1);

  // ---- refusing to overwrite a run; resuming nothing
  CHECK_THROWS_WITH_AS(run_adaptation<Cpu>(small_run(dir / "a", 6)), doctest::Contains("already holds a training run"),
                       Error);
  auto r0 = small_run(dir / "empty", 6);
  r0.resume = true;
  CHECK_THROWS_WITH_AS(run_adaptation<Cpu>(r0), doctest::Contains("no train_state.bin"), Error);

  // ---- the same run, stopped after batch 3 (the checkpoint holds batch 2), then resumed
  AdaptCallbacks stop;
  stop.on_step = [](const AdaptProgress& p) {
    if (p.rec.step == 3) throw IoError("stop");
  };
  CHECK_THROWS_WITH(run_adaptation<Cpu>(small_run(dir / "b", 6), stop), "stop");
  CHECK(read_jsonl(dir / "b" / "log.jsonl").size() == 3);
  auto rb = small_run(dir / "b", 6);
  rb.resume = true;
  int64_t resumed_at = -1;
  int originals_b = 0;
  AdaptCallbacks cbb;
  cbb.on_resume = [&](int64_t step, int64_t tokens) {
    resumed_at = step;
    CHECK(tokens == step * 64);
  };
  cbb.on_original = [&](double, double) { ++originals_b; };
  const auto b = run_adaptation<Cpu>(rb, cbb);
  CHECK(resumed_at == 2);
  CHECK(originals_b == 0);  // the checkpoint remembers the original perplexity
  const auto logb = read_jsonl(dir / "b" / "log.jsonl");
  REQUIRE(logb.size() == 6);
  for (size_t i = 0; i < logb.size(); ++i) CHECK(logb[i]["step"] == int64_t(i) + 1);
  CHECK(b.summary["original_ppl"] == s["original_ppl"]);
  CHECK(b.summary["adapted_ppl_by_loops"] == s["adapted_ppl_by_loops"]);
  CHECK(b.summary["adapted_ppl_plain"] == s["adapted_ppl_plain"]);
  CHECK(b.summary["last_step"] == s["last_step"]);
  // every file of the resumed run equals the uninterrupted run's, timings aside
  check_same_run(dir / "a", dir / "b");
}

TEST_CASE("[loopus] train: a failed write stops the run with an IoError, keeps every file, and the run resumes") {
  OneThread one;
  const auto dir = test::temp_dir("driver_fail");
  run_adaptation<Cpu>(small_run(dir / "a", 6));  // the uninterrupted run
  // At batch 3 (the checkpoint holds batch 2) files may no longer grow past `room` bytes: batch 4's
  // checkpoint cannot be written (train_state.bin is far larger), or, with less room, batch 4's log record.
  for (const bool log_fails : {false, true}) {
    CAPTURE(log_fails);
    const fs::path out = dir / (log_fails ? "log" : "state");
    std::string state_before, model_before, log_before;
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    AdaptCallbacks cb;
    cb.on_step = [&](const AdaptProgress& p) {
      if (p.rec.step != 3) return;
      state_before = test::read_text(out / "train_state.bin");
      model_before = test::read_text(out / "model.safetensors");
      log_before = test::read_text(out / "log.jsonl");
      const uint64_t room = log_fails ? log_before.size() + 40 : log_before.size() * 3;
      REQUIRE(room < state_before.size());
      rlimit lim = saved;
      lim.rlim_cur = rlim_t(room);
      REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    };
    std::string msg;
    try {
      run_adaptation<Cpu>(small_run(out, 6), cb);
    } catch (const IoError& e) {
      msg = e.what();
    }
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &saved) == 0);
    std::signal(SIGXFSZ, old_handler);
    INFO("message: " << msg);
    CHECK(msg.find((out / (log_fails ? "log.jsonl" : "train_state.bin")).string()) != std::string::npos);
    CHECK(msg.find("File too large") != std::string::npos);
    CHECK(test::read_text(out / "train_state.bin") == state_before);
    CHECK(test::read_text(out / "model.safetensors") == model_before);
    const auto log = read_jsonl(out / "log.jsonl");
    CHECK(log.size() == (log_fails ? 3u : 4u));
    if (log_fails) CHECK(test::read_text(out / "log.jsonl") == log_before);
    CHECK(test::temp_files_in(out).empty());
    // resumed, it ends as the uninterrupted run did
    auto r = small_run(out, 6);
    r.resume = true;
    const auto res = run_adaptation<Cpu>(r);
    CHECK(res.warnings == run_adaptation_warnings(dir / "a"));
    check_same_run(dir / "a", out);
  }
}
