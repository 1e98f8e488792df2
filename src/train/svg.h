// Loss curves as a small self-contained SVG line chart.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace rwkv::train {

struct Series {
  std::string name;
  std::string color;                              // any SVG colour, e.g. "#1f77b4"
  std::vector<std::pair<double, double>> points;  // (step, loss)
};

// The chart as SVG text: axes with their ranges, one polyline per series
// (dots for series of few points), a legend. Non-finite points are skipped.
std::string loss_chart_svg(const std::string& title, const std::vector<Series>& series);

// Writes loss_chart_svg atomically.
void write_loss_chart(const std::string& path, const std::string& title, const std::vector<Series>& series);

}  // namespace rwkv::train
