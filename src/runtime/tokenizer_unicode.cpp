#include "runtime/tokenizer_unicode.h"

#include <algorithm>

#include "runtime/tokenizer.h"

namespace rwkv {
namespace {

using namespace unicode_data;

// Hangul syllables compose and decompose by arithmetic, not by table.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

bool in_ranges(const CodeRange* ranges, size_t n, char32_t cp) {
  const CodeRange* end = ranges + n;
  const CodeRange* it = std::upper_bound(ranges, end, cp, [](char32_t c, const CodeRange& r) { return c < r.lo; });
  return it != ranges && cp <= (it - 1)->hi;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out += kLBase + s / kNCount;
    out += kVBase + (s % kNCount) / kTCount;
    if (s % kTCount != 0) out += kTBase + s % kTCount;
    return;
  }
  const Decomposition* end = kDecompositions + kDecompositionCount;
  const Decomposition* it =
      std::lower_bound(kDecompositions, end, cp, [](const Decomposition& d, char32_t c) { return d.cp < c; });
  if (it != end && it->cp == cp) {
    out.append(kDecompositionData + it->offset, it->length);
  } else {
    out += cp;
  }
}

// The primary composite of `a` followed by `b`, or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const Composition* end = kCompositions + kCompositionCount;
  const Composition* it = std::lower_bound(kCompositions, end, std::pair(a, b), [](const Composition& c, auto key) {
    return c.first != key.first ? c.first < key.first : c.second < key.second;
  });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

std::u32string utf8_to_code_points(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const int n = utf8_char_length(text, i);
    const auto b0 = static_cast<unsigned char>(text[i]);
    if (n <= 0) {
      out += kInvalidByteBase + b0;
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? b0 : n == 2 ? b0 & 0x1F : n == 3 ? b0 & 0x0F : b0 & 0x07;
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + size_t(k)]) & 0x3F);
    out += cp;
    i += size_t(n);
  }
  return out;
}

std::string code_points_to_utf8(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) {
    if (cp >= kInvalidByteBase) {
      out += char(cp - kInvalidByteBase);
    } else if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetters, kLetterCount, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumbers, kNumberCount, cp);
}

bool is_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const ClassRange* end = kCombiningClasses + kCombiningClassCount;
  const ClassRange* it =
      std::upper_bound(kCombiningClasses, end, cp, [](char32_t c, const ClassRange& r) { return c < r.lo; });
  return it != kCombiningClasses && cp <= (it - 1)->hi ? (it - 1)->ccc : 0;
}

namespace {

// The NFC quick check (UAX #15): text whose characters all have
// NFC_Quick_Check = Yes and whose combining marks are in canonical order is
// already NFC. Below U+0300 every character passes (checked by the table
// generator), which makes ASCII and Latin-1 text cheap.
bool is_nfc_quick(std::u32string_view cps) {
  uint8_t last_class = 0;
  for (char32_t c : cps) {
    if (c < 0x300 || c >= kInvalidByteBase) {
      last_class = 0;
      continue;
    }
    if (in_ranges(kNfcQuickCheckNotYes, kNfcQuickCheckNotYesCount, c)) return false;
    const uint8_t cc = combining_class(c);
    if (cc != 0 && last_class > cc) return false;
    last_class = cc;
  }
  return true;
}

}  // namespace

std::u32string nfc(std::u32string_view cps) {
  if (is_nfc_quick(cps)) return std::u32string(cps);

  // 1. Full canonical decomposition.
  std::u32string d;
  d.reserve(cps.size() + 8);
  for (char32_t cp : cps) decompose(cp, d);
  // 2. Canonical ordering: stable sort each run of non-starters by class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + std::ptrdiff_t(i), d.begin() + std::ptrdiff_t(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // 3. Canonical composition: each character joins the last starter unless
  // something between them blocks it (a starter, or a mark of the same or
  // higher class).
  std::u32string out;
  out.reserve(d.size());
  ptrdiff_t starter = -1;
  uint8_t last_class = 0;  // class of the last character kept after the starter
  for (char32_t cp : d) {
    const uint8_t cc = combining_class(cp);
    if (starter >= 0) {
      const bool adjacent = size_t(starter) + 1 == out.size();
      if (adjacent || (last_class != 0 && last_class < cc)) {
        if (const char32_t c = compose(out[size_t(starter)], cp); c != 0) {
          out[size_t(starter)] = c;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter = ptrdiff_t(out.size());
      last_class = 0;
    } else {
      last_class = cc;
    }
    out += cp;
  }
  return out;
}

}  // namespace rwkv
