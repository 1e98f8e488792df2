// The bits of Unicode the byte-level BPE tokenizer needs, without ICU:
// UTF-8 to code points (keeping invalid bytes), general categories L and N,
// White_Space, and NFC normalisation. Tables are generated from Python's
// unicodedata by scripts/make_unicode_tables.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv {

namespace unicode_data {
struct CodeRange {
  char32_t lo, hi;
};
struct ClassRange {
  char32_t lo, hi;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  uint32_t offset, length;  // into kDecompositionData
};
struct Composition {
  char32_t first, second, composite;
};
extern const char* const kUnicodeVersion;
extern const CodeRange kLetters[];
extern const size_t kLetterCount;
extern const CodeRange kNumbers[];
extern const size_t kNumberCount;
extern const CodeRange kNfcQuickCheckNotYes[];  // NFC_Quick_Check = No or Maybe
extern const size_t kNfcQuickCheckNotYesCount;
extern const ClassRange kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const char32_t kDecompositionData[];
extern const Composition kCompositions[];
extern const size_t kCompositionCount;
}  // namespace unicode_data

// Code points of UTF-8 text. A byte that is not part of a valid UTF-8
// sequence becomes kInvalidByteBase + byte, a value outside Unicode, so text
// that is not UTF-8 still round-trips through to_utf8.
inline constexpr char32_t kInvalidByteBase = 0x110000;
std::u32string utf8_to_code_points(std::string_view text);
std::string code_points_to_utf8(std::u32string_view cps);

bool is_letter(char32_t cp);  // general category L*
bool is_number(char32_t cp);  // general category N*
bool is_white_space(char32_t cp);  // the White_Space property (what Oniguruma's \s is)
uint8_t combining_class(char32_t cp);

// Unicode Normalization Form C. Invalid-byte values pass through unchanged.
std::u32string nfc(std::u32string_view cps);

}  // namespace rwkv
