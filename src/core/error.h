// Error type used across the library. Every failure caused by outside input
// (files, flags, token ids) is reported as rwkv::Error with a message that names
// the problem; asserts are reserved for internal invariants.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace rwkv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws rwkv::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace rwkv
