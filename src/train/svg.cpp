#include "train/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/atomic_file.h"

namespace rwkv::train {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

std::string loss_chart_svg(const std::string& title, const std::vector<Series>& series) {
  const double W = 720, H = 420, left = 70, right = 20, top = 40, bottom = 50;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (auto [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
        y0 = std::min(y0, y);
        y1 = std::max(y1, y);
      }
  if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return top + (y1 - y) / (y1 - y0) * (H - top - bottom); };

  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
      W, H, W, H, W / 2, escape(title));
  // axes, gridlines and tick labels (5 per axis)
  out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", left, top,
                     W - left - right, H - top - bottom);
  for (int i = 0; i <= 4; ++i) {
    const double fy = y0 + (y1 - y0) * i / 4, fx = x0 + (x1 - x0) * i / 4;
    out += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", left, py(fy),
                       W - right, py(fy));
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g}</text>\n", left - 6, py(fy) + 4, fy);
    out +=
        fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.4g}</text>\n", px(fx), H - bottom + 16, fx);
  }
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", (left + W - right) / 2, H - 12);
  out += fmt::format("<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">loss</text>\n",
                     (top + H - bottom) / 2, (top + H - bottom) / 2);
  int legend = 0;
  for (const Series& s : series) {
    std::string pts;
    size_t n = 0;
    for (auto [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        pts += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
        ++n;
      }
    if (n > 1)
      out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", s.color, pts);
    if (n <= 50)
      for (auto [x, y] : s.points)
        if (std::isfinite(x) && std::isfinite(y))
          out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>\n", px(x), py(y), s.color);
    const double ly = top + 14 + 16 * legend++;
    out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"/>\n",
                       W - right - 150, ly - 4, W - right - 130, ly - 4, s.color);
    out += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", W - right - 124, ly, escape(s.name));
  }
  out += "</svg>\n";
  return out;
}

void write_loss_chart(const std::string& path, const std::string& title, const std::vector<Series>& series) {
  const std::string text = loss_chart_svg(title, series);
  AtomicFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace rwkv::train
