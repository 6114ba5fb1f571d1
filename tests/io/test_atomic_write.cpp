// Nothing lost: every writer replaces its file atomically. A failed write (a file-size limit,
// RLIMIT_FSIZE, stands in for a full disk: write() fails with EFBIG as it would with ENOSPC) leaves
// the previous file byte for byte and no temporary file, and throws an IoError naming the file and
// the OS error; the CLI exits with the io code and says the same.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/safetensors.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/train/checkpoint.hpp"
#include "test_util.hpp"

using namespace loopus;
namespace fs = std::filesystem;

namespace {

constexpr int kIoCode = int(ErrorKind::io);
constexpr auto npos = std::string::npos;

/// The previous contents of the files a writer replaces.
struct Snapshot {
  std::vector<std::pair<fs::path, std::string>> files;
  explicit Snapshot(const std::vector<fs::path>& paths) {
    for (const auto& p : paths) {
      REQUIRE_MESSAGE(fs::is_regular_file(p), p.string());
      files.emplace_back(p, test::read_text(p));
    }
  }
  void check_unchanged() const {
    for (const auto& [p, bytes] : files) CHECK_MESSAGE(test::read_text(p) == bytes, p.string() << " changed");
  }
};

/// Runs `write` in a child whose files may grow to `limit` bytes (less than the new file needs),
/// and checks: an IoError naming `named` and EFBIG; `keep` unchanged; no temporary file in their folder.
void check_failed_write(const std::vector<fs::path>& keep, const fs::path& named, uint64_t limit,
                        const std::function<void()>& write) {
  const Snapshot before(keep);
  const auto r = test::run_limited(limit, write);
  CHECK_EQ(r.code, kIoCode);
  INFO("message: " << r.err);
  CHECK(r.err.find(named.string()) != npos);
  CHECK(r.err.find("File too large") != npos);
  CHECK(r.err.find("the previous file is unchanged") != npos);
  before.check_unchanged();
  CHECK(test::temp_files_in(keep.front().parent_path()).empty());
}

SynthParams small(uint64_t seed) {
  SynthParams p;  // dim 64, 3 layers, vocab 512: about 0.7 MB of f32 weights
  p.layers = 3;
  p.seed = seed;
  return p;
}

}  // namespace

TEST_CASE("[io] atomic writes: commit replaces the file, an abandoned or failed write leaves it") {
  const auto dir = test::temp_dir("atomic_basic");
  const fs::path p = dir / "f.bin";
  io::write_file_atomic(p.string(), "old");
  io::write_file_atomic(p.string(), "new contents");
  CHECK(test::read_text(p) == "new contents");
  {
    io::AtomicFileWriter w(p.string());
    w.write("abandoned", 9);
    w.finish();  // on disk under the temporary name, never renamed
  }
  CHECK(test::read_text(p) == "new contents");
  CHECK(test::temp_files_in(dir).empty());

  // 3 MB, more than the writer's buffer: the failure comes from a direct write, then from a flush
  const std::string big(3 << 20, 'x');
  for (uint64_t limit : {uint64_t(1) << 20, uint64_t(3 << 20) - 1})
    check_failed_write({p}, p, limit, [&] { io::write_file_atomic(p.string(), big); });
  // a first write that fails leaves nothing at all
  const fs::path fresh = dir / "fresh.bin";
  const auto r = test::run_limited(1 << 20, [&] { io::write_file_atomic(fresh.string(), big); });
  CHECK_EQ(r.code, kIoCode);
  CHECK(r.err.find("nothing was written") != npos);
  CHECK_FALSE(fs::exists(fresh));
  CHECK(test::temp_files_in(dir).empty());

  // a folder where the file should go, a missing folder: IoErrors naming the path
  fs::create_directories(dir / "sub");
  CHECK_THROWS_WITH_AS(io::write_file_atomic((dir / "sub").string(), "x"), doctest::Contains("is a directory"),
                       IoError);
  CHECK_THROWS_WITH_AS(io::write_file_atomic((dir / "missing" / "f").string(), "x"),
                       doctest::Contains("No such file or directory"), IoError);
  CHECK_THROWS_WITH_AS(io::make_dirs((dir / "f.bin" / "x").string()), doctest::Contains("f.bin"), IoError);

  // copies are atomic too
  const fs::path q = dir / "copy.bin";
  io::write_file_atomic(q.string(), "previous copy");
  io::write_file_atomic((dir / "big.bin").string(), big);
  check_failed_write({q}, q, 1 << 20, [&] { io::copy_file_atomic((dir / "big.bin").string(), q.string()); });
  io::copy_file_atomic((dir / "big.bin").string(), q.string());
  CHECK(test::read_text(q) == big);
}

TEST_CASE("[io] atomic writes: AppendFile adds whole records, a failed append leaves the ones before it") {
  const auto dir = test::temp_dir("atomic_append");
  const fs::path p = dir / "log.jsonl";
  {
    io::AppendFile log(p.string());
    log.append("{\"step\":1}\n");
    log.append("{\"step\":2}\n");
    log.sync();
  }
  const std::string two = test::read_text(p);
  CHECK(two == "{\"step\":1}\n{\"step\":2}\n");
  // the limit lets part of the record through: that part is cut back off
  const std::string rec = "{\"step\":3,\"pad\":\"" + std::string(200, 'y') + "\"}\n";
  const auto r = test::run_limited(two.size() + 50, [&] {
    io::AppendFile log(p.string());
    log.append(rec);
  });
  CHECK_EQ(r.code, kIoCode);
  INFO("message: " << r.err);
  CHECK(r.err.find(p.string()) != npos);
  CHECK(r.err.find("File too large") != npos);
  CHECK(r.err.find("keeps its previous 22 bytes") != npos);
  CHECK(test::read_text(p) == two);
  io::AppendFile(p.string()).append(rec);  // and it goes on where it stopped
  CHECK(test::read_text(p) == two + rec);
  CHECK_THROWS_WITH_AS(io::AppendFile(dir.string()), doctest::Contains(dir.string().c_str()), IoError);
}

TEST_CASE("[io] atomic writes: every model and checkpoint writer keeps the previous file when a write fails") {
  const auto dir = test::temp_dir("atomic_models");
  auto w1 = synth_weights(small(1)), w2 = synth_weights(small(2));
  const uint64_t limit = 64 << 10;  // the models are about 0.7 MB

  SUBCASE("GGUF") {
    const fs::path p = dir / "m.gguf";
    save_gguf(*w1, p.string());
    check_failed_write({p}, p, limit, [&] { save_gguf(*w2, p.string()); });
    save_gguf(*w2, p.string());  // without the limit it goes through
    CHECK(io::open_gguf(p.string()).find("token_embd.weight"));
  }
  SUBCASE("safetensors") {
    const fs::path p = dir / "m.safetensors";
    const std::vector<float> a(100000, 1.f), b(100000, 2.f);
    io::write_safetensors(p.string(), {{"t", DType::kF32, {100000}, a.data(), a.size() * 4}});
    check_failed_write({p}, p, limit, [&] {
      io::write_safetensors(p.string(), {{"t", DType::kF32, {100000}, b.data(), b.size() * 4}});
    });
  }
  SUBCASE("Hugging Face folder: neither file changes") {
    const fs::path d = dir / "hf";
    save_hf(*w1, d.string());
    check_failed_write({d / "model.safetensors", d / "config.json"}, d / "model.safetensors", limit,
                       [&] { save_hf(*w2, d.string()); });
    // the weights are written, then config.json cannot be: nothing is renamed
    auto w3 = synth_weights(small(3));
    w3->hp.n_ctx_train = 4096;
    const Snapshot before({d / "model.safetensors", d / "config.json"});
    fs::rename(d / "config.json", d / "config.keep");
    fs::create_directories(d / "config.json");  // a folder where config.json goes
    CHECK_THROWS_AS(save_hf(*w3, d.string()), IoError);
    fs::remove(d / "config.json");
    fs::rename(d / "config.keep", d / "config.json");
    before.check_unchanged();
    CHECK(test::temp_files_in(d).empty());
  }
  SUBCASE("LoopUS folder and LoopUS GGUF") {
    auto l1 = recast(w1, LayerSplit::from_specs("0..0", "2..2", 3));
    synth_loop_parts(*l1, 1);
    auto l2 = recast(w2, LayerSplit::from_specs("0..0", "2..2", 3));
    synth_loop_parts(*l2, 2);
    const fs::path d = dir / "lds";
    save_lds(*l1, d.string());
    check_failed_write({d / "model.safetensors", d / "config.json"}, d / "model.safetensors", limit,
                       [&] { save_lds(*l2, d.string()); });
    const fs::path g = dir / "l.gguf";
    save_looped_gguf(*l1, g.string());
    check_failed_write({g}, g, limit, [&] { save_looped_gguf(*l2, g.string()); });
  }
  SUBCASE("training checkpoint") {
    const fs::path p = dir / "train_state.bin";
    const std::vector<float> a(100000, 1.f), b(100000, 2.f);
    train::write_checkpoint(p.string(), {{"step", 1}}, {{"a", a.data(), a.size() * 4}});
    check_failed_write({p}, p, limit, [&] {
      train::write_checkpoint(p.string(), {{"step", 2}}, {{"a", b.data(), b.size() * 4}});
    });
    CHECK(train::LoadedCheckpoint::read(p.string()).state()["step"] == 1);
  }
}

TEST_CASE("[cli] a failed write: exit code 3, the message names the file and the OS error, the old file stays") {
  const std::string cli = test::cli_path();
  if (cli.empty()) return;
  const auto dir = test::temp_dir("atomic_cli");
  const std::vector<std::string> shape = {"synth", "--dim", "64",  "--layers", "2",  "--heads",
                                          "4",     "--ff",  "128", "--vocab",  "512"};
  auto synth = [&](const fs::path& out, const std::string& seed, uint64_t limit) {
    auto args = shape;
    args.insert(args.end(), {"--seed", seed, "--out", out.string()});
    return test::run_cli(cli, args, limit);
  };
  for (const fs::path& out : {dir / "m.gguf", dir / "hf"}) {
    CAPTURE(out);
    REQUIRE_EQ(synth(out, "1", 0).code, 0);
    const std::vector<fs::path> files = out.extension() == ".gguf"
                                            ? std::vector<fs::path>{out}
                                            : std::vector<fs::path>{out / "model.safetensors", out / "config.json"};
    const Snapshot before(files);
    const auto r = synth(out, "2", 64 << 10);
    CHECK_EQ(r.code, kIoCode);
    INFO("stderr: " << r.err);
    CHECK(r.err.rfind("error: ", 0) == 0);
    CHECK(r.err.find(files.front().string()) != npos);
    CHECK(r.err.find("File too large") != npos);
    CHECK(r.err.find("the previous file is unchanged") != npos);
    before.check_unchanged();
    CHECK(test::temp_files_in(files.front().parent_path()).empty());
  }
  // standard output that cannot be written (a full disk) is an io error too, not a silent success
  const auto r = test::run_cli(cli, {"tokenize", "-m", (dir / "m.gguf").string(), "-p", "hello"}, 0, "/dev/full");
  CHECK_EQ(r.code, kIoCode);
  CHECK_MESSAGE(r.err.find("standard output") != npos, r.err);
}
