// Unicode helpers for the tokenizers: UTF-8 coding and repair, NFC, White_Space, GPT-2 byte<->char map.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loopus/tokenizer/detail/unicode_nfc_tables.hpp"

namespace loopus::unicode {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

/// Appends the UTF-8 encoding of `cp` (which must be a Unicode scalar value).
inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

/// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when it is not well formed;
/// in that case `bad_len` receives the length of its maximal subpart (>= 1), the unit that a
/// lossy decoder replaces by one U+FFFD (Unicode "substitution of maximal subparts", which is
/// what Rust's String::from_utf8_lossy and Python's errors="replace" do).
inline size_t utf8_valid_len(std::string_view s, size_t i, size_t& bad_len) {
  const auto b = [&](size_t k) -> unsigned { return static_cast<unsigned char>(s[i + k]); };
  const size_t avail = s.size() - i;
  const unsigned b0 = b(0);
  bad_len = 1;
  if (b0 < 0x80) return 1;
  size_t need;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;   // no overlongs
    if (b0 == 0xED) hi = 0x9F;   // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;   // no overlongs
    if (b0 == 0xF4) hi = 0x8F;   // <= U+10FFFF
  } else {
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (k >= avail) { bad_len = k; return 0; }
    const unsigned c = b(k);
    const unsigned l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
    if (c < l || c > h) { bad_len = k; return 0; }
  }
  return need;
}

/// True when `s` is well-formed UTF-8.
inline bool is_valid_utf8(std::string_view s) {
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    const size_t n = utf8_valid_len(s, i, bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// `s` with every ill-formed sequence (maximal subpart) replaced by U+FFFD.
inline std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    const size_t n = utf8_valid_len(s, i, bad);
    if (n == 0) {
      append_utf8(out, kReplacementChar);
      i += bad;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

/// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
inline uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto c = [&](size_t k) -> uint32_t { return static_cast<unsigned char>(s[i + k]); };
  const uint32_t b0 = c(0);
  uint32_t cp;
  if (b0 < 0x80) {
    cp = b0;
    i += 1;
  } else if (b0 < 0xE0) {
    cp = ((b0 & 0x1F) << 6) | (c(1) & 0x3F);
    i += 2;
  } else if (b0 < 0xF0) {
    cp = ((b0 & 0x0F) << 12) | ((c(1) & 0x3F) << 6) | (c(2) & 0x3F);
    i += 3;
  } else {
    cp = ((b0 & 0x07) << 18) | ((c(1) & 0x3F) << 12) | ((c(2) & 0x3F) << 6) | (c(3) & 0x3F);
    i += 4;
  }
  return cp;
}

/// Code points of valid UTF-8 text.
inline std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(next_code_point(s, i));
  return out;
}

/// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s use).
inline bool is_white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// ---- NFC ---------------------------------------------------------------------------------------

/// Canonical combining class of `cp`.
inline uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto& t = detail::kCombiningClassRanges;
  auto it = std::upper_bound(std::begin(t), std::end(t), cp,
                             [](uint32_t v, const detail::CccRange& r) { return v < r.first; });
  if (it == std::begin(t)) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

namespace detail {

inline constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
inline constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
inline constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

inline bool nfc_unsafe(uint32_t cp) {
  if (cp < 0x300) return false;
  const auto& t = kNfcUnsafeRanges;
  auto it = std::upper_bound(std::begin(t), std::end(t), cp,
                             [](uint32_t v, const CpRange& r) { return v < r.first; });
  if (it == std::begin(t)) return false;
  --it;
  return cp <= it->last;
}

inline const CanonicalDecomp* find_decomp(uint32_t cp) {
  const auto& t = kCanonicalDecomp;
  auto it = std::lower_bound(std::begin(t), std::end(t), cp,
                             [](const CanonicalDecomp& d, uint32_t v) { return d.cp < v; });
  return (it != std::end(t) && it->cp == cp) ? it : nullptr;
}

inline void decompose_into(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const CanonicalDecomp* d = (cp < 0xC0) ? nullptr : find_decomp(cp);
  if (!d) {
    out.push_back(cp);
    return;
  }
  decompose_into(d->first, out);
  if (d->second != 0) decompose_into(d->second, out);
}

/// Sorted (first << 32 | second) -> composite for every primary composite.
inline const std::vector<std::pair<uint64_t, uint32_t>>& composition_table() {
  static const std::vector<std::pair<uint64_t, uint32_t>> table = [] {
    std::vector<std::pair<uint64_t, uint32_t>> t;
    for (const auto& d : kCanonicalDecomp)
      if (d.composes) t.emplace_back((uint64_t{d.first} << 32) | d.second, d.cp);
    std::sort(t.begin(), t.end());
    return t;
  }();
  return table;
}

/// The primary composite of (a, b), or 0 when there is none.
inline uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& t = composition_table();
  const uint64_t key = (uint64_t{a} << 32) | b;
  auto it = std::lower_bound(t.begin(), t.end(), key,
                             [](const std::pair<uint64_t, uint32_t>& e, uint64_t k) { return e.first < k; });
  return (it != t.end() && it->first == key) ? it->second : 0;
}

}  // namespace detail

/// True when valid UTF-8 `s` is certainly in NFC already (quick check; false means "maybe not").
inline bool is_nfc_quick(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    // Lead bytes below 0xCC encode code points below U+0300, which are all NFC-stable starters.
    if (static_cast<unsigned char>(s[i]) < 0xCC) {
      ++i;
      continue;
    }
    if (detail::nfc_unsafe(next_code_point(s, i))) return false;
  }
  return true;
}

/// Canonical composition (NFC) of valid UTF-8 text.
inline std::string nfc(std::string_view s) {
  if (is_nfc_quick(s)) return std::string(s);
  // Full canonical decomposition.
  std::vector<uint32_t> cps;
  cps.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) detail::decompose_into(next_code_point(s, i), cps);
  // Canonical ordering: stable sort each run of non-starters by combining class.
  std::vector<uint8_t> cc(cps.size());
  for (size_t k = 0; k < cps.size(); ++k) cc[k] = combining_class(cps[k]);
  for (size_t k = 0; k < cps.size();) {
    if (cc[k] == 0) {
      ++k;
      continue;
    }
    size_t e = k;
    while (e < cps.size() && cc[e] != 0) ++e;
    if (e - k > 1) {
      std::vector<std::pair<uint8_t, uint32_t>> run;
      for (size_t j = k; j < e; ++j) run.emplace_back(cc[j], cps[j]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
      for (size_t j = k; j < e; ++j) {
        cc[j] = run[j - k].first;
        cps[j] = run[j - k].second;
      }
    }
    k = e;
  }
  // Canonical composition.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;
  int last_cc = -1;
  for (size_t k = 0; k < cps.size(); ++k) {
    const uint32_t c = cps[k];
    const int ccc = cc[k];
    if (starter != SIZE_MAX) {
      // Not blocked: nothing in between (last_cc == 0 means the starter itself was last),
      // or everything in between has a lower class.
      if (last_cc == 0 || (last_cc != -1 && last_cc < ccc)) {
        const uint32_t comp = detail::compose_pair(out[starter], c);
        if (comp != 0) {
          out[starter] = comp;
          continue;
        }
      }
    }
    if (ccc == 0) {
      starter = out.size();
      last_cc = 0;
    } else {
      last_cc = (starter == SIZE_MAX) ? -1 : ccc;
    }
    out.push_back(c);
  }
  std::string r;
  r.reserve(s.size());
  for (uint32_t c : out) append_utf8(r, c);
  return r;
}

// ---- GPT-2 byte-level alphabet -----------------------------------------------------------------

/// GPT-2's reversible byte -> code point map: printable Latin-1 bytes map to themselves, the
/// other 68 bytes to U+0100.. in byte order (so ' ' -> 'Ġ' U+0120, '\n' -> 'Ċ' U+010A).
inline const std::array<uint32_t, 256>& byte_to_code_point() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = keep ? b : next++;
    }
    return t;
  }();
  return table;
}

/// The byte a GPT-2 alphabet code point stands for, or -1 when `cp` is not in the alphabet.
inline int code_point_to_byte(uint32_t cp) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t{};
    t.fill(-1);
    const auto& fwd = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

/// Raw bytes behind a token written in the GPT-2 alphabet. When some character is outside the
/// alphabet (e.g. an added token "a b"), the token's own UTF-8 bytes are returned, as HF's
/// ByteLevel decoder does. `s` must be valid UTF-8.
inline std::string byte_level_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const int b = code_point_to_byte(next_code_point(s, i));
    if (b < 0) return std::string(s);
    out.push_back(static_cast<char>(b));
  }
  return out;
}

/// The GPT-2 alphabet spelling of raw bytes.
inline std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  const auto& t = byte_to_code_point();
  for (unsigned char b : bytes) append_utf8(out, t[b]);
  return out;
}

}  // namespace loopus::unicode
