// The SVG writer and the thinking-trace grid: escaping, well-formed documents, nice ticks, non-finite values,
// bands, arrows, panels, the token grid as SVG and as an HTML page.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "loopus/analysis/svg_plot.hpp"
#include "loopus/analysis/token_grid.hpp"

using namespace loopus;

namespace {

/// Number of (possibly overlapping) occurrences of `needle` in `hay`.
size_t svgtest_count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t i = hay.find(needle); i != std::string::npos; i = hay.find(needle, i + 1)) ++n;
  return n;
}

/// Whether every '&' of `s` starts an entity or character reference.
bool svgtest_entities_ok(const std::string& s) {
  for (size_t i = s.find('&'); i != std::string::npos; i = s.find('&', i + 1)) {
    const size_t semi = s.find(';', i);
    if (semi == std::string::npos) return false;
    const std::string e = s.substr(i + 1, semi - i - 1);
    if (e == "amp" || e == "lt" || e == "gt" || e == "quot" || e == "apos") continue;
    if (e.size() < 2 || e[0] != '#') return false;
    const bool hex = e[1] == 'x';
    if (hex && e.size() < 3) return false;
    for (size_t k = hex ? 2 : 1; k < e.size(); ++k)
      if (!(hex ? std::isxdigit(static_cast<unsigned char>(e[k])) : std::isdigit(static_cast<unsigned char>(e[k]))))
        return false;
  }
  return true;
}

bool svgtest_name_char(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) || ch == ':' || ch == '-' || ch == '_' || ch == '.';
}

/// Empty when `doc` is well formed: one root element, every start tag closed in order (or self-closing; in `html`
/// the void elements need no end tag), attributes as name="value" without '<' and without repeats, every '&' an
/// entity. Otherwise what is wrong and where.
std::string svgtest_check_tags(const std::string& doc, bool html = false) {
  static const std::vector<std::string> kVoid = {"area",  "base", "br",   "col",    "embed", "hr", "img",
                                                 "input", "link", "meta", "source", "track", "wbr"};
  std::vector<std::string> stack;
  int roots = 0;
  size_t i = 0;
  auto at = [&](const std::string& why) { return why + " at byte " + std::to_string(i); };
  while (i < doc.size()) {
    const size_t lt = doc.find('<', i);
    const std::string text = doc.substr(i, (lt == std::string::npos ? doc.size() : lt) - i);
    if (!svgtest_entities_ok(text)) return at("a raw '&' in text");
    if (stack.empty() && text.find_first_not_of(" \t\r\n") != std::string::npos) return at("text outside the root");
    if (lt == std::string::npos) break;
    i = lt;
    if (doc.compare(i, 4, "<!--") == 0) {
      const size_t e = doc.find("-->", i);
      if (e == std::string::npos) return at("an unterminated comment");
      i = e + 3;
      continue;
    }
    if (doc.compare(i, 2, "<!") == 0 || doc.compare(i, 2, "<?") == 0) {
      if (roots) return at("a declaration after the root");
      const size_t e = doc.find('>', i);
      if (e == std::string::npos) return at("an unterminated declaration");
      i = e + 1;
      continue;
    }
    const bool closing = doc.compare(i, 2, "</") == 0;
    size_t j = i + (closing ? 2 : 1);
    const size_t n0 = j;
    while (j < doc.size() && svgtest_name_char(doc[j])) ++j;
    const std::string name = doc.substr(n0, j - n0);
    if (name.empty()) return at("a '<' that starts no tag");
    std::vector<std::string> attrs;
    bool self = false;
    for (;;) {  // attributes up to '>' or '/>'
      while (j < doc.size() && std::isspace(static_cast<unsigned char>(doc[j]))) ++j;
      if (j >= doc.size()) return at("an unterminated tag <" + name);
      if (doc[j] == '>') break;
      if (doc.compare(j, 2, "/>") == 0 && !closing) {
        self = true;
        ++j;
        break;
      }
      if (closing) return at("attributes in an end tag </" + name);
      const size_t a0 = j;
      while (j < doc.size() && svgtest_name_char(doc[j])) ++j;
      const std::string an = doc.substr(a0, j - a0);
      if (an.empty() || j + 1 >= doc.size() || doc[j] != '=' || (doc[j + 1] != '"' && doc[j + 1] != '\''))
        return at("a malformed attribute in <" + name);
      const char q = doc[j + 1];
      const size_t v0 = j + 2, v1 = doc.find(q, v0);
      if (v1 == std::string::npos) return at("an unterminated attribute value in <" + name);
      const std::string val = doc.substr(v0, v1 - v0);
      if (val.find('<') != std::string::npos || !svgtest_entities_ok(val))
        return at("a bad attribute value in <" + name);
      for (const auto& a : attrs)
        if (a == an) return at("a repeated attribute " + an + " in <" + name);
      attrs.push_back(an);
      j = v1 + 1;
    }
    i = j + 1;
    if (closing) {
      if (stack.empty() || stack.back() != name)
        return at("</" + name + "> closes <" + (stack.empty() ? std::string("nothing") : stack.back()) + ">");
      stack.pop_back();
      continue;
    }
    if (stack.empty() && ++roots > 1) return at("a second root <" + name + ">");
    if (self || (html && std::find(kVoid.begin(), kVoid.end(), name) != kVoid.end())) continue;
    stack.push_back(name);
  }
  if (!stack.empty()) return "<" + stack.back() + "> is never closed";
  if (roots != 1) return "no root element";
  return "";
}

/// The checks every SVG document of the writer passes.
void svgtest_check_svg(const std::string& svg) {
  CHECK(svgtest_check_tags(svg) == "");
  CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(svgtest_count(svg, "<svg") == 1);
  CHECK(svg.find("viewBox=\"0 0 ") != std::string::npos);
  std::string lower = svg;
  for (auto& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  CHECK(lower.find("nan") == std::string::npos);
  CHECK(lower.find("inf") == std::string::npos);
  CHECK(analysis::utf8_sanitize(svg) == svg);
}

/// The values of attribute `attr` of every <circle> in document order.
std::vector<double> svgtest_circle_attr(const std::string& svg, const std::string& attr) {
  std::vector<double> v;
  for (size_t i = svg.find("<circle "); i != std::string::npos; i = svg.find("<circle ", i + 1)) {
    const size_t a = svg.find(" " + attr + "=\"", i);
    v.push_back(std::strtod(svg.c_str() + a + attr.size() + 3, nullptr));
  }
  return v;
}

analysis::TokenGrid svgtest_grid() {
  analysis::TokenGrid g;
  g.title = "Thinking trace <test> & \"more\"";
  g.note = "3 tokens, 4 iterations";
  g.row_labels = {"#0 ' cat'", "#1 '\n'", "#2 'bad\xff'"};
  g.col_labels = {"r=0", "r=1", "r=2", "r=3"};
  using C = analysis::GridCell;
  g.cells = {{C{" dog", 0.05, false, "top-5: \"dog\" <b>"}, C{" cat", 0.41, false, ""}, C{" cat", 0.83, true, "x"},
              C{" cat", 0.97, true, ""}},
             {C{" ", 0.3, false, ""}, C{"\n", 0.7, true, ""}},  // exited after two iterations
             {C{"\t", 0.2, false, ""}, C{"<b>", 0.5, false, ""}, C{"supercalifragilistic", 0.6, false, ""},
              C{"bad\xff", 0.9, true, "t\xfe"}}};
  return g;
}

}  // namespace

TEST_CASE("[loopus] analysis: svg text is XML-escaped") {
  CHECK(analysis::xml_escape("a<b>&\"'c") == "a&lt;b&gt;&amp;&quot;&#39;c");
  CHECK(analysis::xml_escape("x\ty\n") == "x&#9;y&#10;");
  CHECK(analysis::xml_escape(std::string("a\x01", 2)) == "a\uFFFD");

  analysis::PlotSpec ps;
  ps.title = "T <&>\"' title";
  ps.x_label = "x <b>";
  ps.y_label = "y & z";
  ps.note = "note \"q\"";
  analysis::Series s{"a<b>&c", {1, 2, 3}, {1, 4, 9}};
  s.point_labels = {"<1>", "&2", "'3'"};
  const std::string svg = analysis::svg_line_chart({s}, ps);
  svgtest_check_svg(svg);
  CHECK(svg.find("T &lt;&amp;&gt;&quot;&#39; title") != std::string::npos);
  CHECK(svg.find("<&>") == std::string::npos);
  CHECK(svg.find("x &lt;b&gt;") != std::string::npos);
  CHECK(svg.find("y &amp; z") != std::string::npos);
  CHECK(svg.find("note &quot;q&quot;") != std::string::npos);
  CHECK(svg.find(">a&lt;b&gt;&amp;c</text>") != std::string::npos);
  CHECK(svg.find(">&lt;1&gt;</text>") != std::string::npos);
  CHECK(svg.find(">&amp;2</text>") != std::string::npos);
  CHECK(svg.find("<b>") == std::string::npos);
}

TEST_CASE("[loopus] analysis: svg tag checker rejects broken documents") {
  CHECK(svgtest_check_tags("<svg><g></g></svg>") == "");
  CHECK(svgtest_check_tags("<svg><g/><text a=\"1\">x &amp; y</text></svg>") == "");
  CHECK(svgtest_check_tags("<svg><g></svg></g>") != "");
  CHECK(svgtest_check_tags("<svg><g></svg>") != "");
  CHECK(svgtest_check_tags("<svg/><svg/>") != "");
  CHECK(svgtest_check_tags("<svg>a & b</svg>") != "");
  CHECK(svgtest_check_tags("<svg x=1></svg>") != "");
  CHECK(svgtest_check_tags("<svg x=\"1\" x=\"2\"></svg>") != "");
  CHECK(svgtest_check_tags("<svg><t>a < b</t></svg>") != "");
  CHECK(svgtest_check_tags("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head></html>", true) == "");
  CHECK(svgtest_check_tags("<html><head><meta charset=\"utf-8\"></head></html>", false) != "");
}

TEST_CASE("[loopus] analysis: svg charts are well-formed") {
  analysis::PlotSpec ps;
  ps.title = "Accuracy against the loop budget";
  ps.x_label = "loop budget B";
  ps.y_label = "accuracy";
  SUBCASE("line chart") {
    svgtest_check_svg(analysis::svg_line_chart({analysis::Series{"a", {1, 2, 4, 8}, {0.2, 0.4, 0.5, 0.55}},
                                                analysis::Series{"b", {1, 2}, {0.1, 0.3}}},
                                               ps));
  }
  SUBCASE("NaN points") {
    svgtest_check_svg(analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3, NAN}, {NAN, 0.4, INFINITY, 1}}}, ps));
  }
  SUBCASE("empty") {
    const std::string svg = analysis::svg_line_chart({}, ps);
    svgtest_check_svg(svg);
    CHECK(svg.find(">Accuracy against the loop budget</text>") != std::string::npos);
    CHECK(svg.find("fill=\"none\" stroke=\"#333\"") != std::string::npos);  // the frame
    CHECK(svgtest_count(svg, "text-anchor=\"end\"") >= 2);                  // y tick labels
  }
  SUBCASE("series without finite points") {
    const std::string svg = analysis::svg_line_chart({analysis::Series{"a", {NAN, 1}, {2, NAN}}}, ps);
    svgtest_check_svg(svg);
    CHECK(svgtest_count(svg, "<circle") == 1);  // the legend's only
  }
  SUBCASE("log y") {
    ps.log_y = true;
    svgtest_check_svg(analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {1e-3, 0.0, 50}}}, ps));
  }
  SUBCASE("log x and y, zero-size spec") {
    ps.log_x = ps.log_y = true;
    ps.width = ps.height = 0;
    svgtest_check_svg(analysis::svg_line_chart({analysis::Series{"a", {1, 10, 100}, {5, 5, 5}}}, ps));
  }
  SUBCASE("band, arrows, point labels") {
    analysis::Series s{"mean", {0, 1, 2}, {1, 2, 1.5}};
    s.lo = {0.5, 1.5, NAN};
    s.hi = {1.5, 2.5, 2};
    s.arrows = true;
    s.point_labels = {"0", "1", "2"};
    svgtest_check_svg(analysis::svg_line_chart({s}, ps));
  }
  SUBCASE("huge and tiny ranges") {
    svgtest_check_svg(analysis::svg_line_chart({analysis::Series{"a", {-1e308, 1e308}, {1e-300, 2e-300}}}, ps));
  }
}

TEST_CASE("[loopus] analysis: svg nice ticks and numbers") {
  const auto t = analysis::nice_ticks(0, 0.97);
  REQUIRE(t.size() == 6);
  for (size_t i = 0; i < t.size(); ++i) CHECK(t[i] == doctest::Approx(0.2 * double(i)));
  CHECK(analysis::nice_ticks(1, 8).size() == 8);                                         // step 1
  CHECK(analysis::nice_ticks(-3.2, 7.9) == std::vector<double>{-4, -2, 0, 2, 4, 6, 8});  // step 2, covering
  CHECK(analysis::nice_ticks(0, 1000, 4) == std::vector<double>{0, 200, 400, 600, 800, 1000});
  CHECK(analysis::nice_step(0.07, 5) == doctest::Approx(0.01));
  CHECK(analysis::nice_step(30, 5) == doctest::Approx(5));
  CHECK(analysis::nice_step(36, 5) == doctest::Approx(10));

  CHECK(analysis::fmt_num(-0.0) == "0");
  CHECK(analysis::fmt_num(0.30000000000000004) == "0.3");
  CHECK(analysis::fmt_num(1e6) == "1e6");
  CHECK(analysis::fmt_num(2.5e-5) == "2.5e-5");
  CHECK(analysis::fmt_num(-1.5e-12) == "-1.5e-12");
  CHECK(analysis::fmt_num(1234.5) == "1234.5");
  CHECK(analysis::fmt_num(NAN) == "n/a");

  analysis::PlotSpec ps;
  ps.title = "ticks";
  const std::string lin = analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {0.1, 0.5, 0.97}}}, ps);
  for (const char* lbl : {">0</text>", ">0.2</text>", ">0.4</text>", ">0.6</text>", ">0.8</text>", ">1</text>"})
    CHECK_MESSAGE(lin.find(lbl) != std::string::npos, lbl);
  CHECK(lin.find(">0.97</text>") == std::string::npos);
  CHECK(lin.find(">1.2</text>") == std::string::npos);

  ps.zero_y = false;
  const std::string nz = analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {10, 11, 12}}}, ps);
  CHECK(nz.find(">10</text>") != std::string::npos);
  CHECK(nz.find(">12</text>") != std::string::npos);
  CHECK(nz.find(">0</text>") == std::string::npos);
  ps.zero_y = true;
  CHECK(analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {10, 11, 12}}}, ps).find(">0</text>") !=
        std::string::npos);

  ps.log_y = true;
  const std::string lg = analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {1e-3, 0.2, 50}}}, ps);
  for (const char* lbl : {">0.001</text>", ">0.01</text>", ">0.1</text>", ">1</text>", ">10</text>"})
    CHECK_MESSAGE(lg.find(lbl) != std::string::npos, lbl);
  CHECK(lg.find(">0.005</text>") == std::string::npos);  // decades only
  CHECK(lg.find(">100</text>") == std::string::npos);    // within the data range
  const std::string narrow = analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {3, 7, 40}}}, ps);
  for (const char* lbl : {">5</text>", ">10</text>", ">20</text>"})  // less than two decades: 1-2-5
    CHECK_MESSAGE(narrow.find(lbl) != std::string::npos, lbl);
  const std::string sci = analysis::svg_line_chart({analysis::Series{"a", {1, 2, 3}, {1e-8, 1e-4, 1}}}, ps);
  CHECK(sci.find("10<tspan") != std::string::npos);
  CHECK(sci.find(">-8</tspan>") != std::string::npos);
  CHECK(sci.find(">0</tspan>") != std::string::npos);
}

TEST_CASE("[loopus] analysis: svg charts skip non-finite values") {
  analysis::PlotSpec ps;
  ps.legend = false;
  analysis::Series s{"a", {1, 2, 3, 4, 5, 6}, {1, 2, NAN, 4, 5, INFINITY}};
  std::string svg = analysis::svg_line_chart({s}, ps);
  svgtest_check_svg(svg);
  CHECK(svgtest_count(svg, "<polyline") == 2);  // broken at the NaN
  CHECK(svgtest_count(svg, "<circle") == 4);

  ps.log_y = true;
  s.y = {1, -1, 10, 0, 100, 1000};
  svg = analysis::svg_line_chart({s}, ps);
  svgtest_check_svg(svg);
  CHECK(svgtest_count(svg, "<circle") == 4);
  CHECK(svgtest_count(svg, "<polyline") == 3);  // {1}, {10}, {100, 1000}

  s.x = {1, 2};  // shorter x than y: only the pairs
  s.y = {1, 2, 3};
  ps.log_y = false;
  CHECK(svgtest_count(analysis::svg_line_chart({s}, ps), "<circle") == 2);
}

TEST_CASE("[loopus] analysis: svg bands, arrows, point labels, equal aspect, legend") {
  analysis::PlotSpec ps;
  ps.title = "trajectory";
  analysis::Series band{"mean +- sd", {0, 1, 2}, {0.5, 0.6, 0.7}};
  band.lo = {0.4, 0.5, 0.6};
  band.hi = {0.6, 4.6, 0.8};  // the band sets the y range
  std::string svg = analysis::svg_line_chart({band}, ps);
  svgtest_check_svg(svg);
  CHECK(svgtest_count(svg, "<polygon") == 1);
  CHECK(svg.find(">5</text>") != std::string::npos);
  CHECK(svg.find("<polygon") < svg.find("<polyline"));  // under the line
  band.lo.pop_back();                                   // sizes differ: no band
  CHECK(svgtest_count(analysis::svg_line_chart({band}, ps), "<polygon") == 0);

  analysis::Series a{"a", {0, 1, 2}, {0, 1, 0}}, b{"b", {0, 1, 1}, {1, 0, 0}}, c{"c", {2, 3}, {2, 3}};
  a.arrows = b.arrows = c.arrows = true;
  a.color = b.color = "#123456";
  a.point_labels = {"r=0", "r=1", "<2>"};
  svg = analysis::svg_line_chart({a, b, c}, ps);
  svgtest_check_svg(svg);
  CHECK(svgtest_count(svg, "<marker ") == 2);     // one per colour
  CHECK(svgtest_count(svg, "marker-end=") == 4);  // b's second segment has zero length
  CHECK(svgtest_count(svg, "<polyline") == 0);    // arrows replace the line
  CHECK(svg.find(">r=1</text>") != std::string::npos);
  CHECK(svg.find(">&lt;2&gt;</text>") != std::string::npos);

  analysis::Series sc{"pca", {0, 10, 0}, {0, 0, 1}};
  sc.line = false;
  ps.equal_aspect = true;
  ps.legend = false;
  svg = analysis::svg_line_chart({sc}, ps);
  svgtest_check_svg(svg);
  const auto cx = svgtest_circle_attr(svg, "cx"), cy = svgtest_circle_attr(svg, "cy");
  REQUIRE(cx.size() == 3);
  CHECK(std::fabs(cx[1] - cx[0]) / std::fabs(cy[2] - cy[0]) == doctest::Approx(10).epsilon(0.03));
  CHECK(cx[0] != doctest::Approx(cx[1]));

  ps.equal_aspect = false;
  ps.legend = true;
  const std::string long_label(60, 'L');
  svg = analysis::svg_line_chart({analysis::Series{long_label, {1, 2}, {1, 2}}}, ps);
  CHECK(svg.find(long_label) == std::string::npos);
  CHECK(svg.find(std::string(27, 'L') + "\u2026") != std::string::npos);
  ps.legend = false;
  CHECK(analysis::svg_line_chart({analysis::Series{long_label, {1, 2}, {1, 2}}}, ps).find("LLL") == std::string::npos);
}

TEST_CASE("[loopus] analysis: svg panels in a grid") {
  std::vector<analysis::Panel> panels(3);
  for (size_t i = 0; i < panels.size(); ++i) {
    panels[i].spec.title = "panel " + std::to_string(i);
    panels[i].spec.width = 400;
    panels[i].spec.height = 300;
    panels[i].series = {analysis::Series{"s", {0, 1, 2}, {1, double(i), 3}}};
    panels[i].series[0].arrows = i != 1;
  }
  const std::string svg = analysis::svg_panels(panels, 2, "Three <panels>");
  svgtest_check_svg(svg);
  CHECK(svg.find("width=\"800\" height=\"636\"") != std::string::npos);
  CHECK(svgtest_count(svg, "<g transform=\"translate(") == 3);
  CHECK(svg.find("translate(0.0,36.0)") != std::string::npos);
  CHECK(svg.find("translate(400.0,36.0)") != std::string::npos);
  CHECK(svg.find("translate(0.0,336.0)") != std::string::npos);
  CHECK(svg.find("Three &lt;panels&gt;") != std::string::npos);
  for (const char* t : {">panel 0</text>", ">panel 1</text>", ">panel 2</text>"})
    CHECK(svg.find(t) != std::string::npos);
  CHECK(svg.find("id=\"p0-arrow0\"") != std::string::npos);  // marker ids stay unique in the document
  CHECK(svg.find("id=\"p2-arrow0\"") != std::string::npos);
  CHECK(svgtest_count(svg, "<marker ") == 2);

  svgtest_check_svg(analysis::svg_panels({}, 2, "nothing"));
  svgtest_check_svg(analysis::svg_panels(panels, 0, ""));
  CHECK(analysis::svg_panels(panels, 0, "").find("width=\"400\" height=\"900\"") != std::string::npos);
}

TEST_CASE("[loopus] analysis: UTF-8 repair and truncation") {
  CHECK(analysis::utf8_sanitize("a\xff"
                                "b") == "a\uFFFDb");
  CHECK(analysis::utf8_sanitize("\xc0\xaf") == "\uFFFD\uFFFD");            // overlong
  CHECK(analysis::utf8_sanitize("\xed\xa0\x80") == "\uFFFD\uFFFD\uFFFD");  // surrogate
  CHECK(analysis::utf8_sanitize("x\xe2\x82") == "x\uFFFD\uFFFD");          // cut sequence
  CHECK(analysis::utf8_sanitize("h\u00e9\u20ac\U0001F600") == "h\u00e9\u20ac\U0001F600");
  CHECK(analysis::utf8_truncate("h\u00e9llo w\u00f6rld", 5) == "h\u00e9ll\u2026");
  CHECK(analysis::utf8_truncate("abc", 3) == "abc");
  CHECK(analysis::utf8_truncate("\U0001F600\U0001F600\U0001F600", 2) == "\U0001F600\u2026");

  CHECK(analysis::visible_token(" ") == "\u2423");
  CHECK(analysis::visible_token(" cat") == "\u2423cat");
  CHECK(analysis::visible_token("a b") == "a b");
  CHECK(analysis::visible_token("\n") == "\u23CE");
  CHECK(analysis::visible_token("\t") == "\u21E5");
  CHECK(analysis::visible_token(std::string("\0", 1)) == "\u2400");
  CHECK(analysis::visible_token("") == "\u2205");
  CHECK(analysis::visible_token("bad\xff") == "bad\uFFFD");
  std::string accents;
  for (int i = 0; i < 20; ++i) accents += "\u00e9";
  const std::string v = analysis::visible_token(accents);
  CHECK(v == accents.substr(0, 13 * 2) + "\u2026");
  CHECK(analysis::utf8_sanitize(v) == v);
}

TEST_CASE("[loopus] analysis: token grid SVG") {
  CHECK(analysis::prob_color(0) == "#f7fbff");
  CHECK(analysis::prob_color(1) == "#08306b");
  CHECK(analysis::prob_color(2) == "#08306b");
  CHECK(analysis::prob_color(NAN) == "#f7fbff");
  CHECK(analysis::prob_text_color(0.05) == "#111111");
  CHECK(analysis::prob_text_color(0.95) == "#ffffff");
  CHECK(analysis::fmt_prob(0.834) == "0.83");
  CHECK(analysis::fmt_prob(NAN) == "\u2013");

  const auto g = svgtest_grid();
  const std::string svg = analysis::svg_token_grid(g);
  svgtest_check_svg(svg);
  CHECK(svgtest_count(svg, "class=\"chosen\"") == 4);
  CHECK(svgtest_count(svg, "class=\"missing\"") == 2);
  CHECK(svgtest_count(svg, "class=\"cell\"") == 6);
  CHECK(svgtest_count(svg, "class=\"legend-chosen\"") == 1);
  CHECK(svg.find("Thinking trace &lt;test&gt; &amp; &quot;more&quot;") != std::string::npos);
  CHECK(svg.find(">3 tokens, 4 iterations</text>") != std::string::npos);
  for (const char* s :
       {">r=0</text>", ">r=3</text>", ">#0 &#39; cat&#39;</text>", ">#1 &#39;\u23CE&#39;</text>",
        ">#2 &#39;bad\uFFFD&#39;</text>", ">\u2423dog</text>", ">\u2423</text>", ">\u23CE</text>", ">\u21E5</text>",
        ">&lt;b&gt;</text>", ">supercalifrag\u2026</text>", ">bad\uFFFD</text>", ">0.83</text>", ">0.97</text>",
        "<title>top-5: &quot;dog&quot; &lt;b&gt;</title>", "<title>t\uFFFD</title>"})
    CHECK_MESSAGE(svg.find(s) != std::string::npos, s);
  CHECK(svg.find("\u2423cat&#39;") == std::string::npos);  // row labels keep their spaces
  // text colour follows the cell: white on the 0.97 cell, dark on the 0.05 cell
  CHECK(svg.find("fill=\"#ffffff\" font-weight=\"bold\">\u2423cat</text>") != std::string::npos);
  CHECK(svg.find("fill=\"#111111\">\u2423dog</text>") != std::string::npos);

  auto g2 = g;  // more rows, taller; more columns, wider
  g2.cells.push_back(g.cells[0]);
  g2.cells.push_back(g.cells[0]);
  g2.cells[0].push_back(analysis::GridCell{"x", 0.5, false, ""});
  const std::string svg2 = analysis::svg_token_grid(g2);
  svgtest_check_svg(svg2);
  auto attr = [](const std::string& doc, const std::string& a) {
    const size_t p = doc.find(" " + a + "=\"");
    return std::atoi(doc.c_str() + p + a.size() + 3);
  };
  CHECK(attr(svg2, "height") == attr(svg, "height") + 2 * 38);
  CHECK(attr(svg2, "width") == attr(svg, "width") + 102);
  svgtest_check_svg(analysis::svg_token_grid(analysis::TokenGrid{}));
}

TEST_CASE("[loopus] analysis: token grid HTML page") {
  const auto g = svgtest_grid();
  const std::string html = analysis::html_token_grid(g);
  CHECK(svgtest_check_tags(html, true) == "");
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("<meta charset=\"utf-8\">") != std::string::npos);
  CHECK(html.find("<style>") != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("http") == std::string::npos);  // nothing external
  CHECK(html.find("url(") == std::string::npos);
  CHECK(analysis::utf8_sanitize(html) == html);
  CHECK(svgtest_count(html, "<table") == 1);
  CHECK(svgtest_count(html, "<tr>") == 4);  // the header row and 3 token rows
  CHECK(svgtest_count(html, "<td") == 12);
  CHECK(svgtest_count(html, "<th scope=\"col\">") == 4);
  CHECK(svgtest_count(html, "<th class=\"row\" scope=\"row\">") == 3);
  CHECK(svgtest_count(html, "class=\"chosen\"") == 4);
  CHECK(svgtest_count(html, "class=\"missing\"") == 2);
  CHECK(html.find("<h1>Thinking trace &lt;test&gt; &amp; &quot;more&quot;</h1>") != std::string::npos);
  CHECK(html.find(">3 tokens, 4 iterations</p>") != std::string::npos);
  CHECK(html.find("title=\"top-5: &quot;dog&quot; &lt;b&gt;\"") != std::string::npos);
  CHECK(html.find("<th scope=\"col\">r=2</th>") != std::string::npos);
  CHECK(html.find(">#2 &#39;bad\uFFFD&#39;</th>") != std::string::npos);
  CHECK(html.find("<span class=\"tok\">\u2423cat</span><span class=\"p\">0.97</span>") != std::string::npos);
  CHECK(html.find("style=\"background:" + analysis::prob_color(0.97) + ";color:#ffffff\"") != std::string::npos);
  CHECK(html.find("class=\"legend\"") != std::string::npos);
  CHECK(svgtest_check_tags(analysis::html_token_grid(analysis::TokenGrid{}), true) == "");
}
