// A small dependency-free SVG line chart writer (results people would rather see than read).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace loopus::analysis {

struct Series {
  std::string label;
  std::vector<double> x, y;
};

struct PlotSpec {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  int width = 720, height = 440;
};

/// Renders series as polylines with markers, axes, ticks and a legend.
inline std::string svg_line_chart(const std::vector<Series>& series, const PlotSpec& spec) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
  auto tx = [&](double v) { return spec.log_x ? std::log10(std::max(v, 1e-300)) : v; };
  auto ty = [&](double v) { return spec.log_y ? std::log10(std::max(v, 1e-300)) : v; };
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      x0 = std::min(x0, tx(s.x[i])); x1 = std::max(x1, tx(s.x[i]));
      y0 = std::min(y0, ty(s.y[i])); y1 = std::max(y1, ty(s.y[i]));
    }
  if (!(x0 < x1)) { x0 -= 1; x1 += 1; }
  if (!(y0 < y1)) { y0 -= 1; y1 += 1; }
  if (!spec.log_y && y0 > 0) y0 = 0;
  const double ypad = (y1 - y0) * 0.05;
  y1 += ypad;
  const int L = 80, R = 180, T = 40, B = 60;
  const double W = spec.width - L - R, H = spec.height - T - B;
  auto px = [&](double v) { return L + (tx(v) - x0) / (x1 - x0) * W; };
  auto py = [&](double v) { return T + H - (ty(v) - y0) / (y1 - y0) * H; };
  std::string o;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
                "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                spec.width, spec.height);
  o += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">%s</text>\n", L,
                spec.title.c_str());
  o += buf;
  std::snprintf(buf, sizeof buf, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n",
                L, T, W, H);
  o += buf;
  // ticks: 5 per axis, in data space (decades on log axes)
  for (int i = 0; i <= 5; ++i) {
    const double fx = x0 + (x1 - x0) * i / 5.0, fy = y0 + (y1 - y0) * i / 5.0;
    const double vx = spec.log_x ? std::pow(10.0, fx) : fx, vy = spec.log_y ? std::pow(10.0, fy) : fy;
    const double sx = L + W * i / 5.0, sy = T + H - H * i / 5.0;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.4g</text>\n",
                  sx, T, sx, T + H, sx, T + H + 16, vx);
    o += buf;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                  L, sy, L + W, sy, L - 6, sy + 4, vy);
    o += buf;
  }
  std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", L + W / 2,
                spec.height - 18, spec.x_label.c_str());
  o += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">%s</text>\n",
                T + H / 2, T + H / 2, spec.y_label.c_str());
  o += buf;
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const char* c = kColors[k % 8];
    std::string pts;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(s.x[i]), py(s.y[i]));
      pts += buf;
    }
    o += "<polyline fill=\"none\" stroke=\"" + std::string(c) + "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n";
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(s.x[i]), py(s.y[i]), c);
      o += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                  L + W + 12, T + 14 + 18.0 * double(k), L + W + 32, T + 14 + 18.0 * double(k), c, L + W + 38,
                  T + 18 + 18.0 * double(k), s.label.c_str());
    o += buf;
  }
  o += "</svg>\n";
  return o;
}

}  // namespace loopus::analysis
