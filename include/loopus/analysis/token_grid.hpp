// The "thinking trace" grid: the top token and its probability at each loop iteration of each generated token.
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

#include "loopus/analysis/svg_plot.hpp"

namespace loopus::analysis {

/// One cell: the token the model would emit at this iteration, its probability, whether it is the token finally
/// generated, and a tooltip (e.g. the top-5 alternatives).
struct GridCell {
  std::string text;
  double prob = 0;
  bool chosen = false;
  std::string tooltip;
};

/// Rows are generated tokens, columns loop iterations (the paper's Fig. 5).
struct TokenGrid {
  std::string title, note;
  std::vector<std::string> row_labels;       ///< one per generated token, e.g. "#3 ' cat'"
  std::vector<std::string> col_labels;       ///< one per iteration, e.g. "r=0", "r=1", ...
  std::vector<std::vector<GridCell>> cells;  ///< [row][col]; a shorter row: the token exited early (grey cells)
};

namespace token_grid_detail {

/// Blues, light to saturated: the stops of the probability scale at 0, 1/8, ..., 1.
inline constexpr uint32_t kScale[] = {0xf7fbff, 0xdeebf7, 0xc6dbef, 0x9ecae1, 0x6baed6,
                                      0x4292c6, 0x2171b5, 0x08519c, 0x08306b};
inline constexpr const char* kMissing = "#e3e3e3";

inline std::string hex(uint32_t rgb) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%06x", unsigned(rgb & 0xFFFFFFu));
  return buf;
}

inline uint32_t scale_rgb(double p) {
  if (!std::isfinite(p)) p = 0;
  const double t = std::clamp(p, 0.0, 1.0) * 8;
  const int i = std::min(int(t), 7);
  const double f = t - i;
  uint32_t rgb = 0;
  for (int sh = 16; sh >= 0; sh -= 8) {
    const double a = double((kScale[i] >> sh) & 0xFF), b = double((kScale[i + 1] >> sh) & 0xFF);
    rgb |= uint32_t(std::lround(a + (b - a) * f)) << sh;
  }
  return rgb;
}

/// WCAG relative luminance of an sRGB colour.
inline double luminance(uint32_t rgb) {
  double y = 0;
  const double w[] = {0.2126, 0.7152, 0.0722};
  for (int k = 0; k < 3; ++k) {
    const double v = double((rgb >> (16 - 8 * k)) & 0xFF) / 255;
    y += w[k] * (v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4));
  }
  return y;
}

/// Control characters as their visible Unicode "control pictures"; leading and trailing spaces as "␣" too when
/// `edge_spaces`.
inline std::string visible(std::string_view s, bool edge_spaces) {
  const auto cps = utf8_code_points(s);
  size_t first = cps.size(), last = 0;
  for (size_t i = 0; i < cps.size(); ++i)
    if (cps[i] != ' ') first = std::min(first, i), last = i;
  std::string o;
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t cp = cps[i];
    if (cp == ' ' && edge_spaces && (i < first || i > last)) cp = 0x2423;  // ␣
    else if (cp == '\n') cp = 0x23CE;                                      // ⏎
    else if (cp == '\t') cp = 0x21E5;                                      // ⇥
    else if (cp == '\r') cp = 0x240D;                                      // ␍
    else if (cp < 0x20) cp = 0x2400 + cp;                                  // ␀ ␁ ...
    else if (cp == 0x7F) cp = 0x2421;                                      // ␡
    else if (cp >= 0x80 && cp <= 0x9F) cp = 0xFFFD;
    utf8_put(o, cp);
  }
  return o;
}

}  // namespace token_grid_detail

/// A token as it is shown in a cell: valid UTF-8 (invalid bytes as U+FFFD), leading and trailing spaces as "␣"
/// (so a whitespace-only token stays visible), newline "⏎", tab "⇥", other control characters as control
/// pictures, the empty token "∅"; at most `max_cp` code points (longer: cut with "…").
inline std::string visible_token(std::string_view tok, size_t max_cp = 14) {
  if (tok.empty()) return "\u2205";
  return utf8_truncate(token_grid_detail::visible(tok, true), max_cp);
}

/// The cell colour of probability `p` (clamped to [0, 1]; NaN as 0): light blue for low, dark blue for high.
inline std::string prob_color(double p) { return token_grid_detail::hex(token_grid_detail::scale_rgb(p)); }

/// The text colour that stays readable on prob_color(p): near-black on light cells, white on dark ones.
inline std::string prob_text_color(double p) {
  return token_grid_detail::luminance(token_grid_detail::scale_rgb(p)) < 0.2 ? "#ffffff" : "#111111";
}

/// A probability as printed in a cell: "0.83"; "–" when it is not a number.
inline std::string fmt_prob(double p) {
  if (!std::isfinite(p)) return "\u2013";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", std::clamp(p, 0.0, 1.0));
  return buf;
}

/// The grid as a standalone SVG document sized from its rows and columns: row labels left, column labels on top,
/// one cell per (token, iteration) coloured by probability, the cells of the finally generated token framed
/// (class "chosen"), the missing cells of tokens that exited early grey (class "missing"), and a legend below.
inline std::string svg_token_grid(const TokenGrid& g) {
  namespace d = token_grid_detail;
  const auto c = svg_detail::coord;
  const size_t rows = std::max(g.row_labels.size(), g.cells.size());
  size_t cols = g.col_labels.size();
  for (const auto& r : g.cells) cols = std::max(cols, r.size());
  const double cw = 100, ch = 36, gap = 2;
  size_t label_cp = 0;
  for (const auto& l : g.row_labels) label_cp = std::max(label_cp, utf8_code_points(l).size());
  const double left = std::max(104.0, 20 + 6.7 * double(std::min<size_t>(label_cp, 24)));
  const double header = (g.title.empty() ? 8 : 30) + (g.note.empty() ? 0 : 18) + 18;  // column label baseline
  const double top = header + 8;
  const double legend_y = top + double(rows) * (ch + gap) + 16;
  // wide enough for the grid, the title (16 px bold) and the note (11 px)
  const double text_w = std::max(24 + 9.6 * double(utf8_code_points(g.title).size()),
                                 24 + 6.2 * double(utf8_code_points(g.note).size()));
  const int w = int(std::max({left + double(cols) * (cw + gap) + 14, 480.0, text_w})), h = int(legend_y + 62);

  std::string o = svg_detail::svg_open(w, h);
  o += "<defs><linearGradient id=\"tg-scale\" x1=\"0\" y1=\"0\" x2=\"1\" y2=\"0\">";
  for (size_t k = 0; k < std::size(d::kScale); ++k)
    o += "<stop offset=\"" + fmt_num(double(k) / 8) + "\" stop-color=\"" + d::hex(d::kScale[k]) + "\"/>";
  o += "</linearGradient></defs>\n";
  if (!g.title.empty())
    o += "<text x=\"16\" y=\"24\" font-size=\"16\" font-weight=\"bold\">" + xml_escape(g.title) + "</text>\n";
  if (!g.note.empty())
    o += "<text x=\"16\" y=\"" + std::string(g.title.empty() ? "24" : "42") + "\" font-size=\"11\" fill=\"#666\">" +
         xml_escape(g.note) + "</text>\n";
  o += "<text x=\"" + c(left - 8) + "\" y=\"" + c(header) +
       "\" text-anchor=\"end\" font-size=\"10\" fill=\"#666\">iteration \u2192</text>\n";
  for (size_t j = 0; j < cols; ++j)
    if (j < g.col_labels.size())
      o += "<text x=\"" + c(left + double(j) * (cw + gap) + cw / 2) + "\" y=\"" + c(header) +
           "\" text-anchor=\"middle\" font-size=\"11\">" +
           xml_escape(utf8_truncate(d::visible(g.col_labels[j], false), 14)) + "</text>\n";

  for (size_t i = 0; i < rows; ++i) {
    const double y = top + double(i) * (ch + gap);
    if (i < g.row_labels.size())
      o += "<text x=\"" + c(left - 8) + "\" y=\"" + c(y + ch / 2 + 4) +
           "\" text-anchor=\"end\" font-family=\"monospace\" font-size=\"11\" xml:space=\"preserve\">" +
           xml_escape(utf8_truncate(d::visible(g.row_labels[i], false), 24)) + "</text>\n";
    for (size_t j = 0; j < cols; ++j) {
      const double x = left + double(j) * (cw + gap);
      const GridCell* cell = i < g.cells.size() && j < g.cells[i].size() ? &g.cells[i][j] : nullptr;
      if (!cell) {
        o += "<rect class=\"missing\" x=\"" + c(x) + "\" y=\"" + c(y) + "\" width=\"" + c(cw) + "\" height=\"" + c(ch) +
             "\" fill=\"" + d::kMissing + "\"/>\n";
        continue;
      }
      o += "<g>";
      if (!cell->tooltip.empty()) o += "<title>" + xml_escape(cell->tooltip) + "</title>";
      const std::string fg = prob_text_color(cell->prob);
      if (cell->chosen)
        o += "<rect class=\"chosen\" x=\"" + c(x + 1.5) + "\" y=\"" + c(y + 1.5) + "\" width=\"" + c(cw - 3) +
             "\" height=\"" + c(ch - 3) + "\" fill=\"" + prob_color(cell->prob) +
             "\" stroke=\"#111\" stroke-width=\"3\"/><rect x=\"" + c(x + 3.5) + "\" y=\"" + c(y + 3.5) + "\" width=\"" +
             c(cw - 7) + "\" height=\"" + c(ch - 7) + "\" fill=\"none\" stroke=\"#fff\" stroke-width=\"1\"/>";
      else
        o += "<rect class=\"cell\" x=\"" + c(x) + "\" y=\"" + c(y) + "\" width=\"" + c(cw) + "\" height=\"" + c(ch) +
             "\" fill=\"" + prob_color(cell->prob) + "\"/>";
      const std::string weight = cell->chosen ? " font-weight=\"bold\"" : "";
      o += "<text x=\"" + c(x + cw / 2) + "\" y=\"" + c(y + 16) +
           "\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"11\" xml:space=\"preserve\" fill=\"" + fg +
           "\"" + weight + ">" + xml_escape(visible_token(cell->text)) + "</text>";
      o += "<text x=\"" + c(x + cw / 2) + "\" y=\"" + c(y + 29) + "\" text-anchor=\"middle\" font-size=\"10\" fill=\"" +
           fg + "\"" + weight + ">" + fmt_prob(cell->prob) + "</text></g>\n";
    }
  }

  // legend: the colour bar, the highlight, the grey of tokens that had exited
  const double ly = legend_y, bx = 218, bw = 160;
  o += "<text x=\"16\" y=\"" + c(ly + 10) + "\" font-size=\"11\">colour: probability of the top token</text>";
  o += "<rect x=\"" + c(bx) + "\" y=\"" + c(ly) + "\" width=\"" + c(bw) +
       "\" height=\"12\" fill=\"url(#tg-scale)\" stroke=\"#999\" stroke-width=\"0.5\"/>\n";
  for (const double t : {0.0, 0.5, 1.0})
    o += "<text x=\"" + c(bx + bw * t) + "\" y=\"" + c(ly + 24) + "\" text-anchor=\"middle\" font-size=\"10\">" +
         fmt_num(t) + "</text>";
  o += "\n<rect class=\"legend-chosen\" x=\"17.5\" y=\"" + c(ly + 33.5) + "\" width=\"33\" height=\"17\" fill=\"" +
       prob_color(0.6) + "\" stroke=\"#111\" stroke-width=\"3\"/><text x=\"34\" y=\"" + c(ly + 46) +
       "\" text-anchor=\"middle\" font-size=\"10\" font-weight=\"bold\" fill=\"" + prob_text_color(0.6) +
       "\">tok</text><text x=\"58\" y=\"" + c(ly + 46) +
       "\" font-size=\"11\">framed, bold: the token finally generated</text>";
  o += "<rect x=\"300\" y=\"" + c(ly + 32) + "\" width=\"36\" height=\"20\" fill=\"" + std::string(d::kMissing) +
       "\"/><text x=\"342\" y=\"" + c(ly + 46) + "\" font-size=\"11\">exited early</text>\n";
  return o + "</svg>\n";
}

/// The grid as a complete standalone HTML5 page (inline style only: no scripts, no external resources): title,
/// note, a <table> with the row labels as row headers and the column labels as column headers, each cell's tooltip
/// as its title attribute, the same colours and highlight (class "chosen") as svg_token_grid, and a legend line.
inline std::string html_token_grid(const TokenGrid& g) {
  namespace d = token_grid_detail;
  const size_t rows = std::max(g.row_labels.size(), g.cells.size());
  size_t cols = g.col_labels.size();
  for (const auto& r : g.cells) cols = std::max(cols, r.size());
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
      xml_escape(g.title.empty() ? "Thinking trace" : g.title) +
      "</title>\n<style>\n"
      "body{font-family:sans-serif;margin:16px;color:#111;background:#fff}\n"
      "h1{font-size:18px;margin:0 0 4px}\n"
      "p.note{color:#666;font-size:12px;margin:0 0 10px}\n"
      "table.grid{border-collapse:separate;border-spacing:2px;font-size:12px}\n"
      "table.grid th{font-weight:normal;color:#333;padding:2px 6px}\n"
      "table.grid th.row{text-align:right;font-family:monospace;white-space:pre}\n"
      "table.grid th.corner{color:#666;font-size:10px;text-align:right}\n"
      "table.grid td{min-width:7.5em;height:2.6em;text-align:center;padding:0 3px;border:3px solid transparent}\n"
      "table.grid td.chosen,span.legend-chosen{border:3px solid #111;box-shadow:inset 0 0 0 1px #fff;"
      "font-weight:bold}\n"
      "table.grid td.missing{background:" +
      std::string(d::kMissing) +
      "}\n"
      ".tok{display:block;font-family:monospace;white-space:pre}\n"
      ".p{display:block;font-size:10px}\n"
      "p.legend{font-size:12px;color:#333;margin-top:10px}\n"
      "p.legend span{display:inline-block;padding:1px 6px;margin:0 1px}\n"
      "</style>\n</head>\n<body>\n";
  if (!g.title.empty()) o += "<h1>" + xml_escape(g.title) + "</h1>\n";
  if (!g.note.empty()) o += "<p class=\"note\">" + xml_escape(g.note) + "</p>\n";
  o += "<table class=\"grid\">\n<thead><tr><th class=\"corner\">token \u2193 iteration \u2192</th>";
  for (size_t j = 0; j < cols; ++j)
    o += "<th scope=\"col\">" + (j < g.col_labels.size() ? xml_escape(d::visible(g.col_labels[j], false)) : "") +
         "</th>";
  o += "</tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < rows; ++i) {
    o += "<tr><th class=\"row\" scope=\"row\">" +
         (i < g.row_labels.size() ? xml_escape(utf8_truncate(d::visible(g.row_labels[i], false), 48)) : "") + "</th>";
    for (size_t j = 0; j < cols; ++j) {
      const GridCell* cell = i < g.cells.size() && j < g.cells[i].size() ? &g.cells[i][j] : nullptr;
      if (!cell) {
        o += "<td class=\"missing\"></td>";
        continue;
      }
      o += std::string("<td class=\"") + (cell->chosen ? "chosen" : "cell") +
           "\" style=\"background:" + prob_color(cell->prob) + ";color:" + prob_text_color(cell->prob) + "\"";
      if (!cell->tooltip.empty()) o += " title=\"" + xml_escape(cell->tooltip) + "\"";
      o += "><span class=\"tok\">" + xml_escape(visible_token(cell->text)) + "</span><span class=\"p\">" +
           fmt_prob(cell->prob) + "</span></td>";
    }
    o += "</tr>\n";
  }
  o += "</tbody>\n</table>\n<p class=\"legend\">Colour: probability of the top token, ";
  for (const double t : {0.0, 0.25, 0.5, 0.75, 1.0})
    o += "<span style=\"background:" + prob_color(t) + ";color:" + prob_text_color(t) + "\">" + fmt_num(t) + "</span>";
  o += "; <span class=\"legend-chosen\">framed, bold</span>: the token finally generated; <span style=\"background:" +
       std::string(d::kMissing) + "\">grey</span>: the token had exited (no iteration).</p>\n</body>\n</html>\n";
  return o;
}

}  // namespace loopus::analysis
