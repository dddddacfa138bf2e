#include "engine/core/user_text.h"

#include <gtest/gtest.h>

namespace lensd {
namespace {

TEST(UserText, QuotesShortTextWhole) {
  EXPECT_EQ(QuoteUserText("blocks.0.hook_z"), "'blocks.0.hook_z'");
  EXPECT_EQ(QuoteUserText(""), "''");
}

TEST(UserText, EscapesBytesOutsidePrintableAscii) {
  EXPECT_EQ(QuoteUserText(std::string("a\nb\xff\\", 5)), "'a\\x0ab\\xff\\x5c'");
}

TEST(UserText, TruncatesLongTextAndSaysHowLong) {
  const std::string huge(1 << 20, 'x');
  const std::string q = QuoteUserText(huge);
  EXPECT_EQ(q, "'" + std::string(kMaxQuotedBytes, 'x') + "'... (1048576 bytes)");
}

}  // namespace
}  // namespace lensd
