/*
 * json_text.c: every input gives valid JSON string content, and what is not valid UTF-8 comes
 * out as the surrogate escapes Python's "surrogateescape" decoding gives the same bytes.
 */
#include "check.h"

#include "json_text.h"

#include <stdio.h>
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
    /* The edges of the valid ranges. */
    expect("\xef\xbf\xbf", "\xef\xbf\xbf", "U+FFFF");
    expect("\xed\x9f\xbf", "\xed\x9f\xbf", "U+D7FF, the last before the surrogates");
    expect("\xee\x80\x80", "\xee\x80\x80", "U+E000, the first after them");
    expect("\xed\xbf\xbf", "\\udced\\udcbf\\udcbf", "surrogate U+DFFF encoded in UTF-8");
    expect("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf", "U+10FFFF");
    expect("\xc1\x80", "\\udcc1\\udc80", "overlong 2-byte NUL");
    expect("\xf0\x80\x80\xaf", "\\udcf0\\udc80\\udc80\\udcaf", "overlong 4-byte");
    expect("\xf5\x80\x80\x80", "\\udcf5\\udc80\\udc80\\udc80", "lead byte F5");
    expect("a\xc3", "a\\udcc3", "truncated 2-byte at the end");
    expect("\xf0\x9f\x98", "\\udcf0\\udc9f\\udc98", "truncated 4-byte at the end");
    expect("\xc3\xc3\xa9", "\\udcc3\xc3\xa9", "truncated 2-byte, then a valid one");
    expect("\xff\"", "\\udcff\\\"", "a quote after a bad byte");
    /* Every byte alone: 0x80-0xFF is the escape of itself, 0x01-0x7F never one. */
    for (unsigned byte = 1; byte < 0x100; byte++) {
        char input[2] = {(char)byte, '\0'}, escaped[16], what[32];
        if (byte >= 0x80)
            snprintf(escaped, sizeof escaped, "\\udc%02x", byte);
        else if (byte < 0x20 || byte == 0x7f)
            snprintf(escaped, sizeof escaped, "\\u%04x", byte);
        else if (byte == '"' || byte == '\\')
            snprintf(escaped, sizeof escaped, "\\%c", byte);
        else
            snprintf(escaped, sizeof escaped, "%c", byte);
        snprintf(what, sizeof what, "byte 0x%02x alone", byte);
        expect(input, escaped, what);
    }
    return checks_summary();
}
