/*
 * Unit test of the JSON string writer: whatever the bytes, the output is valid JSON, valid UTF-8
 * passes through, and every other byte becomes the escape Python's surrogateescape gives it
 * (\udcXY), so that json.loads then os.fsencode give the bytes back. Build (the suite does it
 * with Meson as build/test-json-write):
 *   gcc -std=c11 -Idetector detector/json_write.c tests/unit/test_json_write.c
 */
#define _GNU_SOURCE

#include "json_write.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

/* json_write_string's output for text, in a buffer the caller frees. */
static char *written(const char *text)
{
    char *buffer = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buffer, &size);
    if (!out) {
        perror("open_memstream");
        exit(2);
    }
    json_write_string(out, text);
    fclose(out);
    return buffer;
}

static void test_strings(void)
{
    static const struct {
        const char *what, *text, *json;
    } cases[] = {
        {"empty", "", "\"\""},
        {"ASCII", "abc /x.py", "\"abc /x.py\""},
        {"quote and backslash", "a\"b\\c", "\"a\\\"b\\\\c\""},
        {"control characters", "\x01\t\n\x1f\x7f", "\"\\u0001\\u0009\\u000a\\u001f\\u007f\""},
        {"2-byte sequence (U+00E9)", "caf\xc3\xa9", "\"caf\xc3\xa9\""},
        {"3-byte sequence (U+20AC)", "\xe2\x82\xac", "\"\xe2\x82\xac\""},
        {"3-byte sequence (U+FFFF)", "\xef\xbf\xbf", "\"\xef\xbf\xbf\""},
        {"3-byte sequence after the surrogates (U+E000)", "\xee\x80\x80", "\"\xee\x80\x80\""},
        {"4-byte sequence (U+1F600)", "\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""},
        {"4-byte sequence (U+10FFFF)", "\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\""},
        {"overlong 2-byte '/'", "\xc0\xaf", "\"\\udcc0\\udcaf\""},
        {"overlong 2-byte NUL", "\xc1\x80", "\"\\udcc1\\udc80\""},
        {"overlong 3-byte", "\xe0\x80\xaf", "\"\\udce0\\udc80\\udcaf\""},
        {"overlong 4-byte", "\xf0\x80\x80\xaf", "\"\\udcf0\\udc80\\udc80\\udcaf\""},
        {"surrogate U+D800 in UTF-8", "\xed\xa0\x80", "\"\\udced\\udca0\\udc80\""},
        {"surrogate U+DFFF in UTF-8", "\xed\xbf\xbf", "\"\\udced\\udcbf\\udcbf\""},
        {"last before the surrogates (U+D7FF)", "\xed\x9f\xbf", "\"\xed\x9f\xbf\""},
        {"above U+10FFFF", "\xf4\x90\x80\x80", "\"\\udcf4\\udc90\\udc80\\udc80\""},
        {"lead byte F5", "\xf5\x80\x80\x80", "\"\\udcf5\\udc80\\udc80\\udc80\""},
        {"truncated 2-byte at the end", "a\xc3", "\"a\\udcc3\""},
        {"truncated 3-byte at the end", "\xe2\x82", "\"\\udce2\\udc82\""},
        {"truncated 4-byte at the end", "\xf0\x9f\x98", "\"\\udcf0\\udc9f\\udc98\""},
        {"truncated 3-byte then ASCII", "\xe2\x82x", "\"\\udce2\\udc82x\""},
        {"truncated 2-byte then a valid one", "\xc3\xc3\xa9", "\"\\udcc3\xc3\xa9\""},
        {"lone continuation bytes", "\x80\xbf", "\"\\udc80\\udcbf\""},
        {"bytes 0xFF 0xFE (an argv)", "\xff\xfe", "\"\\udcff\\udcfe\""},
        {"Latin-1 file name", "caf\xe9.py", "\"caf\\udce9.py\""},
        {"escaped quote after a bad byte", "\xff\"", "\"\\udcff\\\"\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *json = written(cases[i].text);
        CHECK(strcmp(json, cases[i].json) == 0, "%s: wrote %s, expected %s", cases[i].what, json,
              cases[i].json);
        free(json);
    }
}

/* Every single byte 0x80-0xFF alone is an escape of itself; 0x01-0x7F is never one. */
static void test_every_byte_alone(void)
{
    for (unsigned byte = 1; byte < 0x100; byte++) {
        char text[2] = {(char)byte, '\0'};
        char *json = written(text);
        char expected[16];
        if (byte >= 0x80)
            snprintf(expected, sizeof expected, "\"\\udc%02x\"", byte);
        else if (byte < 0x20 || byte == 0x7f)
            snprintf(expected, sizeof expected, "\"\\u%04x\"", byte);
        else if (byte == '"' || byte == '\\')
            snprintf(expected, sizeof expected, "\"\\%c\"", byte);
        else
            snprintf(expected, sizeof expected, "\"%c\"", byte);
        CHECK(strcmp(json, expected) == 0, "byte 0x%02x: wrote %s, expected %s", byte, json,
              expected);
        free(json);
    }
}

int main(void)
{
    test_strings();
    test_every_byte_alone();
    return checks_summary();
}
