// Typed, range-checked reads of JSON fields from files (config.json, GGUF metadata, checkpoint
// headers): a wrong type or an out-of-range number is a FormatError naming the file and key,
// never a nlohmann exception or an out-of-range conversion.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"

namespace loopus::io {

/// Converts v to T (bool, std::string, an integer type, float or double); false when v has
/// another JSON type or its number does not fit T. Integers take integral numbers only (6 or
/// 6.0, not 6.5); float takes any number, clamped to +-inf beyond its range.
template <class T>
bool json_to(const nlohmann::json& v, T* out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return false;
    *out = v.get<bool>();
    return true;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return false;
    *out = v.get_ref<const std::string&>();
    return true;
  } else if constexpr (std::is_integral_v<T>) {
    using L = std::numeric_limits<T>;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(L::max())) return false;
      *out = T(u);
      return true;
    }
    if (v.is_number_integer()) {
      const int64_t s = v.get<int64_t>();
      if (s < 0 ? (!L::is_signed || s < int64_t(L::min())) : uint64_t(s) > uint64_t(L::max())) return false;
      *out = T(s);
      return true;
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      // 2^digits is exact in a double; T's range is [min, 2^digits).
      const double hi = std::ldexp(1.0, L::digits), lo = L::is_signed ? -hi : 0.0;
      if (!(d >= lo && d < hi) || d != std::trunc(d)) return false;
      *out = T(d);
      return true;
    }
    return false;
  } else {
    static_assert(std::is_floating_point_v<T>, "json_to: bool, std::string, integer or floating-point type");
    if (!v.is_number()) return false;
    const double d = v.get<double>();
    if constexpr (std::is_same_v<T, float>) {
      constexpr double kMax = double(std::numeric_limits<float>::max());
      *out = d > kMax    ? std::numeric_limits<float>::infinity()
             : d < -kMax ? -std::numeric_limits<float>::infinity()
                         : float(d);
    } else {
      *out = T(d);
    }
    return true;
  }
}

namespace detail {
template <class T>
constexpr const char* json_type_text() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (std::is_integral_v<T>) return std::is_signed_v<T> ? "an integer" : "a non-negative integer";
  else return "a number";
}
/// A short rendering of a JSON value for messages (never throws on bad UTF-8).
inline std::string json_short(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s.replace(57, std::string::npos, "...");  // (not substr + "...": GCC 12 -Warray-bounds)
  return s;
}
}  // namespace detail

/// v as T, or a FormatError "<where>: <what> is <value>, expected <kind> [in range]".
template <class T>
T json_as(const nlohmann::json& v, const std::string& what, const std::string& where) {
  T out{};
  if (!json_to(v, &out)) {
    std::string range;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
      range = " from " + std::to_string(std::numeric_limits<T>::min()) + " to " +
              std::to_string(std::numeric_limits<T>::max());
    throw FormatError(where + ": " + what + " is " + detail::json_short(v) + ", expected " +
                      detail::json_type_text<T>() + range);
  }
  return out;
}

/// obj[key] as T; `dflt` when obj is not an object, has no such key, or holds null there.
template <class T>
T json_field(const nlohmann::json& obj, const std::string& key, T dflt, const std::string& where) {
  if (!obj.is_object()) return dflt;
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return dflt;
  return json_as<T>(*it, "'" + key + "'", where);
}

/// obj[key] as T; a FormatError naming `where` and the key when it is missing or null.
template <class T>
T json_required(const nlohmann::json& obj, const std::string& key, const std::string& where) {
  const auto it = obj.is_object() ? obj.find(key) : obj.end();
  if (!obj.is_object() || it == obj.end() || it->is_null())
    throw FormatError(where + ": missing " + detail::json_type_text<T>() + " '" + key + "'");
  return json_as<T>(*it, "'" + key + "'", where);
}

}  // namespace loopus::io
