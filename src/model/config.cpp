#include "model/config.h"

namespace rwkv {

std::string_view arch_name(Arch arch) {
  switch (arch) {
    case Arch::V4: return "4";
    case Arch::V5_0: return "5.0";
    case Arch::V5_1: return "5.1";
    case Arch::V5_2: return "5.2";
    case Arch::V6: return "6";
    case Arch::V7: return "7";
  }
  return "?";
}

}  // namespace rwkv
