// libFuzzer target: the adaptation data reader (train/data.hpp): a JSONL or plain-text file cut
// into documents (blank-line or line split), a held-out share, tokenized with the stories260K
// vocabulary (loaded once), then packed and padded sequences and shuffled batches. The first
// byte picks JSONL or text, the split, EOS, padding and the held-out percentage; the rest is the file.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "loopus/tokenizer/spm.hpp"
#include "loopus/train/data.hpp"

namespace {
const loopus::SpmTokenizer& tokenizer() {
  static const auto t = loopus::SpmTokenizer::from_llama2c(loopus::fuzz::data_file("models/stories260K/tok512.bin"));
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loopus;
  const SpmTokenizer& tok = tokenizer();
  static const std::string jsonl = (fuzz::scratch_dir() / "data.jsonl").string();
  static const std::string text = (fuzz::scratch_dir() / "data.txt").string();
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const std::string& path = mode & 1 ? jsonl : text;
  fuzz::write_file(path, data + 1, size - 1);
  const auto split = mode & 2 ? train::DocSplit::kLine : train::DocSplit::kBlankLine;
  const bool eos = mode & 4, pad = mode & 8;
  const double val_percent = double((mode >> 4) * 6);  // 0 .. 90
  fuzz::guarded(mode & 1 ? "data.jsonl" : "data.txt", size, [&] {
    train::Corpus c = train::load_corpus(path, "", val_percent, tok, split, eos);
    const int64_t seq_len = 2 + (mode >> 4);
    const train::PackedData d = pad ? train::PackedData::padded(c.train, c.train_starts, seq_len, 0)
                                    : train::PackedData(c.train, seq_len);
    if (d.size() >= 2) {
      train::Batcher b(d, 2, 1);
      std::vector<int32_t> ids(size_t(2 * seq_len)), labels(ids.size());
      for (int i = 0; i < 3; ++i) b.next(ids.data(), labels.data());
    }
  });
  return 0;
}
