/*
 * json_text.c: every input gives valid JSON string content, and what is not valid UTF-8 comes
 * out as the surrogate escapes Python's "surrogateescape" decoding gives the same bytes.
 */
#include "check.h"

#include "json_text.h"

#include <string.h>

struct output {
    char text[256];
    size_t length;
};

static void append(void *context, const char *bytes, size_t length)
{
    struct output *out = context;
    if (out->length + length < sizeof out->text) {
        memcpy(out->text + out->length, bytes, length);
        out->length += length;
    }
    out->text[out->length] = '\0';
}

static void expect(const char *input, const char *escaped, const char *what)
{
    struct output out = {.length = 0};
    out.text[0] = '\0';
    json_escape_each(input, append, &out);
    CHECK(!strcmp(out.text, escaped), "%s: got \"%s\", want \"%s\"", what, out.text, escaped);
}

int main(void)
{
    expect("", "", "empty");
    expect("plain ascii", "plain ascii", "ASCII");
    expect("a\"b\\c", "a\\\"b\\\\c", "quote and backslash");
    expect("\n\t\x01\x1f\x7f", "\\u000a\\u0009\\u0001\\u001f\\u007f", "control characters");
    expect("caf\xc3\xa9", "caf\xc3\xa9", "2-byte sequence");
    expect("\xe2\x82\xac", "\xe2\x82\xac", "3-byte sequence");
    expect("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", "4-byte sequence");
    expect("\xc0\xaf", "\\udcc0\\udcaf", "overlong 2-byte");
    expect("\xe0\x80\xaf", "\\udce0\\udc80\\udcaf", "overlong 3-byte");
    expect("\xed\xa0\x80", "\\udced\\udca0\\udc80", "surrogate encoded in UTF-8");
    expect("\xf4\x90\x80\x80", "\\udcf4\\udc90\\udc80\\udc80", "above U+10FFFF");
    expect("\xe2\x82", "\\udce2\\udc82", "truncated at the end");
    expect("\xe2\x82x", "\\udce2\\udc82x", "truncated before ASCII");
    expect("\x80", "\\udc80", "lone continuation byte");
    expect("\xff\xfe", "\\udcff\\udcfe", "bytes that never start a sequence");
    expect("a\xff"
           "b\xc3\xa9",
           "a\\udcffb\xc3\xa9", "mixed");
    return checks_summary();
}
