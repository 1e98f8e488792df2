#include "runtime/documents.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace rwkv {

std::vector<std::string> read_documents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open data file '{}'", path);
  std::vector<std::string> docs;
  if (!path.ends_with(".jsonl")) {
    std::stringstream all;
    all << in.rdbuf();
    if (in.bad()) fail("cannot read data file '{}'", path);
    docs.push_back(all.str());
    return docs;
  }
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not a JSON object ({})", path, line_no, e.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      fail("{}:{}: expected an object with a string \"text\" field", path, line_no);
    docs.push_back(j["text"].get<std::string>());
  }
  if (in.bad()) fail("cannot read data file '{}'", path);
  return docs;
}

}  // namespace rwkv
