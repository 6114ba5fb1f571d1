// loopus tokenize: text -> ids as JSON arrays (one prompt, or a JSONL file of {"text": ...} lines).
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <sstream>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/core/read_file.hpp"

namespace loopus::cli {

void register_tokenize(CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "print token ids of a text as a JSON array");
  struct Args {
    ModelArgs model;
    std::string text, jsonl;
    bool no_special = false;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*sub, /*model_required=*/false);
  auto* p = sub->add_option("-p,--prompt", a->text, "text to encode");
  auto* j = sub->add_option("--jsonl", a->jsonl, "file of JSON lines with a \"text\" field; prints one array per line");
  p->excludes(j);
  sub->add_flag("--no-special", a->no_special,
                "add no BOS/EOS (like add_special_tokens=False); special-token strings in the text still match");
  sub->callback([a] {
    std::unique_ptr<Tokenizer> tok;
    if (!a->model.tokenizer.empty()) {
      tok = io::open_tokenizer_file(a->model.tokenizer);
    } else if (!a->model.model.empty()) {
      auto f = io::open_any(a->model.model, io::LoadMode::kMmap);
      tok = io::open_tokenizer(f);
    } else {
      throw UsageError("tokenize needs -m MODEL or --tokenizer FILE");
    }
    auto print = [&](const std::string& s) {
      nlohmann::json ids = tok->encode(s, !a->no_special);
      std::printf("%s\n", ids.dump().c_str());
    };
    if (!a->jsonl.empty()) {
      std::istringstream in(read_file_bytes(a->jsonl, "JSON lines"));
      std::string line;
      size_t n = 0;
      while (std::getline(in, line)) {
        ++n;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json obj;
        check_json_text(line, a->jsonl + ":" + std::to_string(n));
        try {
          obj = nlohmann::json::parse(line);
        } catch (const std::exception& e) {
          throw FormatError(a->jsonl + ":" + std::to_string(n) + ": not valid JSON (" + e.what() + ")");
        }
        if (!obj.is_object() || !obj.contains("text") || !obj["text"].is_string())
          throw FormatError(a->jsonl + ":" + std::to_string(n) + ": expected an object with a string field \"text\"");
        print(obj["text"].get<std::string>());
      }
    } else {
      print(a->text);
    }
  });
}

}  // namespace loopus::cli
