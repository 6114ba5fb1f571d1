// The one small dependency-free SVG writer of the project: line charts, scatters, bands, arrows and panel grids.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace loopus::analysis {

/// One line (or scatter) of a chart. `Series{label, x, y}` is a plain polyline with markers (the optional members
/// have default member initializers, so that such an initializer is not a -Wmissing-field-initializers warning).
struct Series {
  std::string label;
  std::vector<double> x, y;
  /// A translucent band from lo[i] to hi[i] under the line (both the size of x; otherwise no band).
  std::vector<double> lo = {}, hi = {};
  /// Small text next to point i (e.g. an iteration number); empty strings and missing entries draw nothing.
  std::vector<std::string> point_labels = {};
  bool line = true;        ///< draw the polyline through the points
  bool markers = true;     ///< draw a dot at each point
  bool arrows = false;     ///< draw each segment as an arrow from point i to point i + 1 (instead of the polyline)
  std::string color = {};  ///< any SVG colour; empty: the palette colour of the series' index
};

/// Titles, axes and size of one chart (or of one panel of svg_panels); a size below 200 x 150 is taken as that.
struct PlotSpec {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  int width = 720, height = 440;
  bool legend = true;         ///< a legend of the labelled series in the right margin
  bool equal_aspect = false;  ///< the same data units per pixel on both axes (linear axes only), e.g. for a PCA scatter
  bool zero_y = true;         ///< a linear y axis reaches 0 when all values are on one side of it
  std::string note = {};      ///< one line of small grey text under the title
};

/// One chart of a multi-panel figure.
struct Panel {
  std::vector<Series> series;
  PlotSpec spec;
};

// ---- text ------------------------------------------------------------------------------------------

/// Length of the well-formed UTF-8 sequence at s[i] (its code point in `cp`), or 0 when s[i] does not start one.
inline size_t utf8_seq(std::string_view s, size_t i, uint32_t& cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte (no overlongs, surrogates, > U+10FFFF)
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1Fu;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0Fu, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07u, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const unsigned char d = b(k);
    if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
    cp = (cp << 6) | (d & 0x3Fu);
  }
  return n;
}

/// Appends the UTF-8 encoding of the Unicode scalar value `cp`.
inline void utf8_put(std::string& o, uint32_t cp) {
  if (cp < 0x80) {
    o += static_cast<char>(cp);
  } else if (cp < 0x800) {
    o += static_cast<char>(0xC0 | (cp >> 6));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    o += static_cast<char>(0xE0 | (cp >> 12));
    o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    o += static_cast<char>(0xF0 | (cp >> 18));
    o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// The code points of `s`; each byte that does not start a well-formed UTF-8 sequence becomes U+FFFD.
inline std::vector<uint32_t> utf8_code_points(std::string_view s) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const size_t n = utf8_seq(s, i, cp);
    cps.push_back(n ? cp : 0xFFFD);
    i += n ? n : 1;
  }
  return cps;
}

/// `s` as valid UTF-8: each byte that does not start a well-formed sequence is replaced by U+FFFD.
inline std::string utf8_sanitize(std::string_view s) {
  std::string o;
  for (const uint32_t cp : utf8_code_points(s)) utf8_put(o, cp);
  return o;
}

/// At most `max_cp` code points of `s` (sanitized as by utf8_sanitize); a longer text keeps max_cp - 1 of them
/// and ends with "…". Never cuts inside a multi-byte sequence.
inline std::string utf8_truncate(std::string_view s, size_t max_cp) {
  const auto cps = utf8_code_points(s);
  std::string o;
  const bool cut = cps.size() > max_cp;
  const size_t keep = cut ? (max_cp > 0 ? max_cp - 1 : 0) : cps.size();
  for (size_t i = 0; i < keep; ++i) utf8_put(o, cps[i]);
  if (cut && max_cp > 0) utf8_put(o, 0x2026);
  return o;
}

/// Text for XML (SVG) and HTML, in element content and in quoted attributes: valid UTF-8 (invalid bytes as U+FFFD),
/// & < > " ' as entities, tab, newline and CR as character references, the other characters that XML 1.0 forbids
/// (C0 controls, U+FFFE, U+FFFF) as U+FFFD.
inline std::string xml_escape(std::string_view s) {
  std::string o;
  o.reserve(s.size());
  for (const uint32_t cp : utf8_code_points(s)) {
    switch (cp) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      case '\t': o += "&#9;"; break;
      case '\n': o += "&#10;"; break;
      case '\r': o += "&#13;"; break;
      default: utf8_put(o, (cp < 0x20 || cp == 0xFFFE || cp == 0xFFFF) ? 0xFFFD : cp);
    }
  }
  return o;
}

/// A compact number: %g with 6 significant digits, no "-0", the exponent without '+' and leading zeros
/// ("1e6", "2.5e-5"); "n/a" for NaN and infinities.
inline std::string fmt_num(double v) {
  if (!std::isfinite(v)) return "n/a";
  if (v == 0) v = 0;  // -0 -> 0
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  std::string s = buf, o;
  const size_t e = s.find('e');
  if (e == std::string::npos) return s == "-0" ? "0" : s;
  o = s.substr(0, e + 1);
  size_t i = e + 1;
  if (s[i] == '-') o += '-';
  if (s[i] == '-' || s[i] == '+') ++i;
  while (i + 1 < s.size() && s[i] == '0') ++i;
  return o + s.substr(i);
}

// ---- ticks -----------------------------------------------------------------------------------------

/// A 1-2-5 step (1, 2 or 5 times a power of ten) that cuts `span` into about `target` intervals.
inline double nice_step(double span, int target) {
  if (!(span > 0) || !std::isfinite(span)) return 1;
  const double raw = span / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/// Linear-axis ticks: the multiples of nice_step(hi - lo, target) from the one at or below `lo` to the one at or
/// above `hi`, so that they cover [lo, hi] (0..0.97 gives 0, 0.2, ..., 1). {lo, hi} when the range is degenerate.
inline std::vector<double> nice_ticks(double lo, double hi, int target = 5) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi)) return {lo, hi};
  const double step = nice_step(hi - lo, target);
  const double k0 = std::floor(lo / step + 1e-9), k1 = std::ceil(hi / step - 1e-9);
  if (!std::isfinite(k0) || !std::isfinite(k1) || k1 - k0 > 1000) return {lo, hi};
  std::vector<double> t;
  for (double k = k0; k <= k1; ++k) t.push_back(k == 0 ? 0.0 : k * step);
  return t;
}

// ---- charts ----------------------------------------------------------------------------------------

namespace svg_detail {

inline constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

/// One axis in axis space (log10 of the values on a log axis).
struct Axis {
  bool log = false;
  double lo = 0, hi = 1;
  std::vector<double> ticks, minor;  // labelled ticks and (log axes) unlabelled 2..9 ticks, in axis space
  bool sci = false;                  // decade labels as 10^k rather than plain numbers
};

inline bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }
inline double to_axis(double v, bool log) { return log ? std::log10(v) : v; }

/// A coordinate for an attribute: one decimal, never "nan", "inf" or "-0.0".
inline std::string coord(double v) {
  if (!std::isfinite(v)) v = 0;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return std::string(buf) == "-0.0" ? "0.0" : buf;
}

/// An axis over the data range [dlo, dhi] (axis space; +inf, -inf when there is no data).
inline Axis make_axis(double dlo, double dhi, bool log, int target) {
  Axis a;
  a.log = log;
  if (!(dlo <= dhi)) dlo = 0, dhi = 1;
  if (log) {  // the data range; decades as ticks, or 1-2-5 (then 1..9, then linear nice) values within less
    if (dlo == dhi) dlo -= 0.5, dhi += 0.5;
    a.lo = dlo, a.hi = dhi;
    const double k0 = std::ceil(dlo - 1e-9), k1 = std::floor(dhi + 1e-9);
    const double step = std::max(1.0, std::ceil((k1 - k0 + 1) / std::max(target, 1)));
    if (step == 1 && dhi - dlo <= 6)
      for (double k = k0 - 1; k <= k1; ++k)
        for (int m = 2; m <= 9; ++m)
          if (const double v = k + std::log10(double(m)); v >= dlo && v <= dhi) a.minor.push_back(v);
    if (k1 - k0 >= 2) {  // three decades or more
      for (double k = std::ceil(k0 / step) * step; k <= k1; k += step) a.ticks.push_back(k);
      a.sci = k0 < -3 || k1 > 4;
      return a;
    }
    for (const auto& ms : {std::vector<int>{1, 2, 5}, std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
      a.ticks.clear();
      for (double k = std::floor(dlo); k <= std::ceil(dhi); ++k)
        for (const int m : ms)
          if (const double v = k + std::log10(double(m)); v >= dlo - 1e-9 && v <= dhi + 1e-9) a.ticks.push_back(v);
      if (a.ticks.size() >= 3) return a;
    }
    a.ticks.clear();
    for (const double v : nice_ticks(std::pow(10.0, dlo), std::pow(10.0, dhi), target))
      if (v > 0 && std::log10(v) >= dlo - 1e-9 && std::log10(v) <= dhi + 1e-9) a.ticks.push_back(std::log10(v));
    return a;
  }
  if (dlo == dhi) {
    const double d = dlo == 0 ? 1 : std::fabs(dlo) * 0.1;
    dlo -= d, dhi += d;
  }
  a.ticks = nice_ticks(dlo, dhi, target);
  a.lo = a.ticks.front(), a.hi = a.ticks.back();
  return a;
}

/// Re-ticks a linear axis whose range was widened (equal aspect): nice ticks inside [lo, hi] only.
inline void retick_inside(Axis& a, int target) {
  a.ticks.clear();
  const double eps = (a.hi - a.lo) * 1e-9;
  for (const double t : nice_ticks(a.lo, a.hi, target))
    if (t >= a.lo - eps && t <= a.hi + eps) a.ticks.push_back(t);
}

/// The label of tick `t` (axis space) as SVG text content.
inline std::string tick_label(const Axis& a, double t) {
  if (!a.log) return fmt_num(t);
  if (!a.sci) return fmt_num(std::pow(10.0, t));
  return "10<tspan dy=\"-5\" font-size=\"9\">" + fmt_num(std::round(t)) + "</tspan>";
}

/// Number of characters the label of tick `t` shows (for the left margin).
inline size_t tick_label_len(const Axis& a, double t) {
  return a.log && a.sci ? 2 + fmt_num(std::round(t)).size() : fmt_num(a.log ? std::pow(10.0, t) : t).size();
}

/// Renders one chart of spec.width x spec.height at (ox, oy) as a <g> group; `id` prefixes the ids it defines
/// (arrow markers), unique per document.
inline void render_chart(std::string& o, const std::vector<Series>& series, const PlotSpec& spec, double ox, double oy,
                         const std::string& id) {
  const int w = std::max(spec.width, 200), h = std::max(spec.height, 150);
  const bool lx = spec.log_x, ly = spec.log_y;
  auto npts = [](const Series& s) { return std::min(s.x.size(), s.y.size()); };
  auto has_band = [](const Series& s) {
    return !s.lo.empty() && s.lo.size() == s.x.size() && s.hi.size() == s.x.size();
  };
  auto ok = [&](const Series& s, size_t i) { return usable(s.x[i], lx) && usable(s.y[i], ly); };
  auto band_ok = [&](const Series& s, size_t i) {
    return usable(s.x[i], lx) && usable(s.lo[i], ly) && usable(s.hi[i], ly);
  };

  // data ranges in axis space
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto take = [](double v, double& a, double& b) { a = std::min(a, v), b = std::max(b, v); };
  for (const auto& s : series) {
    for (size_t i = 0; i < npts(s); ++i)
      if (ok(s, i)) take(to_axis(s.x[i], lx), x0, x1), take(to_axis(s.y[i], ly), y0, y1);
    if (has_band(s))
      for (size_t i = 0; i < s.x.size(); ++i)
        if (band_ok(s, i)) {
          take(to_axis(s.x[i], lx), x0, x1);
          take(to_axis(s.lo[i], ly), y0, y1), take(to_axis(s.hi[i], ly), y0, y1);
        }
  }
  if (!ly && spec.zero_y && y0 <= y1) {
    if (y0 > 0) y0 = 0;
    if (y1 < 0) y1 = 0;
  }

  // margins: title and note on top, tick labels and axis labels left and below, the legend right
  std::vector<const Series*> legend;
  size_t legend_cp = 0;
  if (spec.legend)
    for (const auto& s : series)
      if (!s.label.empty()) legend.push_back(&s), legend_cp = std::max(legend_cp, utf8_code_points(s.label).size());
  legend_cp = std::min<size_t>(legend_cp, 28);
  const double R_want = 52 + 6.2 * double(legend_cp);
  const double R = legend.empty() ? 24 : std::min(std::max(R_want, 90.0), 0.4 * w);
  const size_t legend_max_cp = R_want <= R ? 28 : std::max<size_t>(4, size_t((R - 52) / 6.2));
  const double T = !spec.note.empty() ? 50 : !spec.title.empty() ? 36 : 14;
  const double B = spec.x_label.empty() ? 30 : 50;
  const double H = h - T - B;
  const double pad = 6;  // data stays this many pixels inside the frame
  const Axis ay_data = make_axis(y0, y1, ly, std::max(2, int(H / 55)));
  auto left_margin = [&](const Axis& a) {
    size_t len = 1;
    for (const double t : a.ticks) len = std::max(len, tick_label_len(a, t));
    return std::max(44.0, (spec.y_label.empty() ? 10 : 30) + 8 + 6.8 * double(len));
  };
  double L = left_margin(ay_data), W = 0;
  Axis ax, ay;
  for (int pass = 0; pass < 2; ++pass) {  // again when equal aspect widened the y labels
    W = std::max(w - L - R, 40.0);
    int x_target = std::max(2, int(W / 90));
    ax = make_axis(x0, x1, lx, x_target);
    size_t xlen = 1;  // fewer ticks where their labels are wider than 90 pixels apart allows
    for (const double t : ax.ticks) xlen = std::max(xlen, tick_label_len(ax, t));
    if (7.0 * double(xlen) + 16 > 90)
      ax = make_axis(x0, x1, lx, x_target = std::max(1, int(W / (7.0 * double(xlen) + 16))));
    ay = ay_data;
    if (!spec.equal_aspect || lx || ly) break;
    const double sx = (ax.hi - ax.lo) / (W - 2 * pad), sy = (ay.hi - ay.lo) / (H - 2 * pad), u = std::max(sx, sy);
    const double ex = u * (W - 2 * pad) - (ax.hi - ax.lo), ey = u * (H - 2 * pad) - (ay.hi - ay.lo);
    ax.lo -= ex / 2, ax.hi += ex / 2, ay.lo -= ey / 2, ay.hi += ey / 2;
    retick_inside(ax, x_target);
    retick_inside(ay, std::max(2, int(H / 55)));
    if (pass == 1 || left_margin(ay) <= L) break;
    L = left_margin(ay);
  }
  auto px = [&](double v) { return L + pad + (to_axis(v, lx) - ax.lo) / (ax.hi - ax.lo) * (W - 2 * pad); };
  auto py = [&](double v) { return T + H - pad - (to_axis(v, ly) - ay.lo) / (ay.hi - ay.lo) * (H - 2 * pad); };
  auto pxa = [&](double a) { return L + pad + (a - ax.lo) / (ax.hi - ax.lo) * (W - 2 * pad); };
  auto pya = [&](double a) { return T + H - pad - (a - ay.lo) / (ay.hi - ay.lo) * (H - 2 * pad); };
  const auto c = coord;

  o += "<g transform=\"translate(" + c(ox) + "," + c(oy) + ")\">\n";
  if (!spec.title.empty())
    o += "<text x=\"" + c(L) + "\" y=\"22\" font-size=\"15\" font-weight=\"bold\">" + xml_escape(spec.title) +
         "</text>\n";
  if (!spec.note.empty())
    o += "<text x=\"" + c(L) + "\" y=\"" + (spec.title.empty() ? "22" : "39") + "\" font-size=\"11\" fill=\"#666\">" +
         xml_escape(spec.note) + "</text>\n";

  // grid, tick marks and tick labels
  const std::string fb = c(T + H), ft = c(T), fl = c(L), fr = c(L + W);
  for (const double m : ax.minor)
    o += "<line x1=\"" + c(pxa(m)) + "\" y1=\"" + fb + "\" x2=\"" + c(pxa(m)) + "\" y2=\"" + c(T + H + 3) +
         "\" stroke=\"#999\"/>\n";
  for (const double m : ay.minor)
    o += "<line x1=\"" + c(L - 3) + "\" y1=\"" + c(pya(m)) + "\" x2=\"" + fl + "\" y2=\"" + c(pya(m)) +
         "\" stroke=\"#999\"/>\n";
  for (const double t : ax.ticks) {
    const std::string sx = c(pxa(t));
    o += "<line x1=\"" + sx + "\" y1=\"" + ft + "\" x2=\"" + sx + "\" y2=\"" + fb + "\" stroke=\"#e4e4e4\"/>";
    o += "<line x1=\"" + sx + "\" y1=\"" + fb + "\" x2=\"" + sx + "\" y2=\"" + c(T + H + 5) + "\" stroke=\"#333\"/>";
    o += "<text x=\"" + sx + "\" y=\"" + c(T + H + 18) + "\" text-anchor=\"middle\">" + tick_label(ax, t) + "</text>\n";
  }
  for (const double t : ay.ticks) {
    const std::string sy = c(pya(t));
    o += "<line x1=\"" + fl + "\" y1=\"" + sy + "\" x2=\"" + fr + "\" y2=\"" + sy + "\" stroke=\"#e4e4e4\"/>";
    o += "<line x1=\"" + c(L - 5) + "\" y1=\"" + sy + "\" x2=\"" + fl + "\" y2=\"" + sy + "\" stroke=\"#333\"/>";
    o += "<text x=\"" + c(L - 8) + "\" y=\"" + c(pya(t) + 4) + "\" text-anchor=\"end\">" + tick_label(ay, t) +
         "</text>\n";
  }
  o += "<rect x=\"" + fl + "\" y=\"" + ft + "\" width=\"" + c(W) + "\" height=\"" + c(H) +
       "\" fill=\"none\" stroke=\"#333\"/>\n";
  if (!spec.x_label.empty())
    o += "<text x=\"" + c(L + W / 2) + "\" y=\"" + c(T + H + 38) + "\" text-anchor=\"middle\">" +
         xml_escape(spec.x_label) + "</text>\n";
  if (!spec.y_label.empty())
    o += "<text x=\"16\" y=\"" + c(T + H / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " + c(T + H / 2) +
         ")\">" + xml_escape(spec.y_label) + "</text>\n";

  // colours; one arrowhead marker per colour of the series that draw arrows
  std::vector<std::string> colors, arrow_colors;
  for (size_t k = 0; k < series.size(); ++k) {
    colors.push_back(series[k].color.empty() ? kPalette[k % std::size(kPalette)] : xml_escape(series[k].color));
    if (series[k].arrows && std::find(arrow_colors.begin(), arrow_colors.end(), colors[k]) == arrow_colors.end())
      arrow_colors.push_back(colors[k]);
  }
  auto arrow_id = [&](const std::string& col) {
    return id + "arrow" +
           std::to_string(std::find(arrow_colors.begin(), arrow_colors.end(), col) - arrow_colors.begin());
  };
  if (!arrow_colors.empty()) {
    o += "<defs>\n";
    for (const auto& col : arrow_colors)
      o += "<marker id=\"" + arrow_id(col) +
           "\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"9\" markerHeight=\"9\" "
           "markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"" +
           col + "\"/></marker>\n";
    o += "</defs>\n";
  }

  // bands under every line
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    if (!has_band(s)) continue;
    for (size_t i = 0; i < s.x.size();) {  // one polygon per run of usable points
      if (!band_ok(s, i)) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < s.x.size() && band_ok(s, j)) ++j;
      std::string pts;
      for (size_t q = i; q < j; ++q) pts += c(px(s.x[q])) + "," + c(py(s.hi[q])) + " ";
      for (size_t q = j; q-- > i;) pts += c(px(s.x[q])) + "," + c(py(s.lo[q])) + " ";
      pts.pop_back();
      o += "<polygon fill=\"" + colors[k] + "\" fill-opacity=\"0.18\" stroke=\"none\" points=\"" + pts + "\"/>\n";
      i = j;
    }
  }

  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const std::string& col = colors[k];
    const size_t n = npts(s);
    if (s.arrows) {
      for (size_t i = 0; i + 1 < n; ++i) {
        if (!ok(s, i) || !ok(s, i + 1)) continue;
        double ax0 = px(s.x[i]), ay0 = py(s.y[i]), ax1 = px(s.x[i + 1]), ay1 = py(s.y[i + 1]);
        const double len = std::hypot(ax1 - ax0, ay1 - ay0);
        if (!(len > 0.5)) continue;
        const double cut = s.markers && len > 14 ? 4 : 0;  // stop short of the dots
        const double ux = (ax1 - ax0) / len * cut, uy = (ay1 - ay0) / len * cut;
        ax0 += ux, ay0 += uy, ax1 -= ux, ay1 -= uy;
        o += "<line x1=\"" + c(ax0) + "\" y1=\"" + c(ay0) + "\" x2=\"" + c(ax1) + "\" y2=\"" + c(ay1) + "\" stroke=\"" +
             col + "\" stroke-width=\"1.6\" marker-end=\"url(#" + arrow_id(col) + ")\"/>\n";
      }
    } else if (s.line) {
      for (size_t i = 0; i < n;) {  // one polyline per run of usable points
        if (!ok(s, i)) {
          ++i;
          continue;
        }
        size_t j = i;
        std::string pts;
        for (; j < n && ok(s, j); ++j) pts += c(px(s.x[j])) + "," + c(py(s.y[j])) + " ";
        pts.pop_back();
        o += "<polyline fill=\"none\" stroke=\"" + col + "\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"" +
             pts + "\"/>\n";
        i = j;
      }
    }
    if (s.markers)
      for (size_t i = 0; i < n; ++i)
        if (ok(s, i))
          o += "<circle cx=\"" + c(px(s.x[i])) + "\" cy=\"" + c(py(s.y[i])) + "\" r=\"3\" fill=\"" + col + "\"/>\n";
    for (size_t i = 0; i < n && i < s.point_labels.size(); ++i)
      if (ok(s, i) && !s.point_labels[i].empty())
        o += "<text x=\"" + c(px(s.x[i]) + 5) + "\" y=\"" + c(py(s.y[i]) - 5) + "\" font-size=\"10\" fill=\"" + col +
             "\">" + xml_escape(utf8_truncate(s.point_labels[i], 16)) + "</text>\n";
  }

  // legend in the right margin; what does not fit the plot height is counted in a last line
  const size_t fit = std::max<size_t>(1, size_t((H - 6) / 18));
  const size_t shown = legend.size() <= fit ? legend.size() : fit - 1;
  const double lx0 = L + W + 12;
  for (size_t k = 0; k < shown; ++k) {
    const Series& s = *legend[k];
    const std::string& col = colors[size_t(&s - series.data())];
    const double yy = T + 12 + 18.0 * double(k);
    if (has_band(s))
      o += "<rect x=\"" + c(lx0) + "\" y=\"" + c(yy - 6) + "\" width=\"22\" height=\"12\" fill=\"" + col +
           "\" fill-opacity=\"0.18\"/>";
    if (s.line || s.arrows)
      o += "<line x1=\"" + c(lx0) + "\" y1=\"" + c(yy) + "\" x2=\"" + c(lx0 + 22) + "\" y2=\"" + c(yy) +
           "\" stroke=\"" + col + "\" stroke-width=\"2\"/>";
    if (s.markers || (!s.line && !s.arrows))
      o += "<circle cx=\"" + c(lx0 + 11) + "\" cy=\"" + c(yy) + "\" r=\"3\" fill=\"" + col + "\"/>";
    o += "<text x=\"" + c(lx0 + 28) + "\" y=\"" + c(yy + 4) + "\" font-size=\"11\">" +
         xml_escape(utf8_truncate(s.label, legend_max_cp)) + "</text>\n";
  }
  if (shown < legend.size())
    o += "<text x=\"" + c(lx0 + 28) + "\" y=\"" + c(T + 16 + 18.0 * double(shown)) +
         "\" font-size=\"11\" fill=\"#666\">+" + std::to_string(legend.size() - shown) + " more</text>\n";
  o += "</g>\n";
}

/// The opening of a standalone SVG document of w x h pixels (white background).
inline std::string svg_open(int w, int h) {
  const std::string sw = std::to_string(w), sh = std::to_string(h);
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + sw + "\" height=\"" + sh + "\" viewBox=\"0 0 " + sw +
         " " + sh + "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"" + sw + "\" height=\"" + sh +
         "\" fill=\"white\"/>\n";
}

}  // namespace svg_detail

/// A chart of `series` as polylines (or arrows) with markers, optional bands and point labels, nice ticks (decades
/// on log axes), a legend and the spec's titles, as a standalone SVG document. Non-finite points (and points <= 0
/// on a log axis) are skipped and break their line.
inline std::string svg_line_chart(const std::vector<Series>& series, const PlotSpec& spec) {
  const int w = std::max(spec.width, 200), h = std::max(spec.height, 150);
  std::string o = svg_detail::svg_open(w, h);
  svg_detail::render_chart(o, series, spec, 0, 0, "c-");
  return o + "</svg>\n";
}

/// A figure of several charts in a grid of `columns` columns (row by row), each with its own axes and the size of
/// its spec; `title` above them all. One standalone SVG document.
inline std::string svg_panels(const std::vector<Panel>& panels, int columns, const std::string& title) {
  const size_t n = panels.size(), cols = std::clamp<size_t>(size_t(std::max(columns, 1)), 1, std::max<size_t>(n, 1));
  const size_t rows = (n + cols - 1) / cols;
  std::vector<int> cw(cols, 0), rh(rows, 0);
  for (size_t i = 0; i < n; ++i) {
    cw[i % cols] = std::max(cw[i % cols], std::max(panels[i].spec.width, 200));
    rh[i / cols] = std::max(rh[i / cols], std::max(panels[i].spec.height, 150));
  }
  const int top = title.empty() ? 0 : 36;
  int w = 0, h = top;
  for (const int v : cw) w += v;
  for (const int v : rh) h += v;
  w = std::max(w, 300), h = std::max(h, top + 20);
  std::string o = svg_detail::svg_open(w, h);
  if (!title.empty())
    o += "<text x=\"16\" y=\"25\" font-size=\"17\" font-weight=\"bold\">" + xml_escape(title) + "</text>\n";
  double y = top;
  for (size_t r = 0; r < rows; ++r) {
    double x = 0;
    for (size_t k = 0; k < cols && r * cols + k < n; ++k) {
      const size_t i = r * cols + k;
      std::string id = "p";  // (not "p" + std::string&&: GCC 12 warns there, -Wstringop-overflow)
      id.append(std::to_string(i)).append(1, '-');
      svg_detail::render_chart(o, panels[i].series, panels[i].spec, x, y, id);
      x += cw[k];
    }
    y += rh[r];
  }
  return o + "</svg>\n";
}

}  // namespace loopus::analysis
