// libFuzzer target: an adaptation resume state (train/checkpoint.hpp: magic, header length,
// header JSON with the run's state and blob table, blobs, FNV-1a checksum) restored by
// train::Adapter::load into a tiny model (Reference backend); a state that loads is then trained
// one batch from. The input is the file without its last 8 bytes: the target appends the right
// checksum, so the fuzzer gets past it (tests/train cover a wrong checksum).
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_common.hpp"
#include "fuzz_models.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  static const std::string path = (fuzz::scratch_dir() / "train_state.bin").string();
  static const auto lw = fuzz::tiny_looped();
  static const train::PackedData train_data = fuzz::tiny_train_data();
  std::string file(reinterpret_cast<const char*>(data), size);
  train::detail::Fnv1a sum;
  sum.add(file.data(), file.size());
  file.append(reinterpret_cast<const char*>(&sum.h), 8);
  fuzz::write_file(path, file.data(), file.size());
  fuzz::guarded("train_state.bin", size, [&] {
    train::TrainModel<Reference> m(lw, train::TrainSelect{}, 9);
    train::Adapter<Reference> ad(m, train_data, fuzz::tiny_adapt_config());
    (void)ad.load(path);
    if (!ad.done()) (void)ad.step();
  });
  return 0;
}
