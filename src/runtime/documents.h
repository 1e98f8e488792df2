// Text corpora as documents: a plain text file is one document; a `.jsonl`
// file has one JSON object per line whose string field "text" is a document
// (blank lines are skipped). Used by training, perplexity and evaluation.
#pragma once

#include <string>
#include <vector>

namespace rwkv {

// Fails naming the file (and line) if it cannot be read or a line of a
// .jsonl file is not an object with a string "text".
std::vector<std::string> read_documents(const std::string& path);

}  // namespace rwkv
