#include "json_text.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * The length of the valid UTF-8 sequence at `text` (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 when the byte there does not start one.
 */
static size_t utf8_sequence_length(const unsigned char *text)
{
    unsigned char lead = text[0];
    size_t length;
    uint32_t code;
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        length = 2, code = lead & 0x1F;
    else if (lead >= 0xE0 && lead <= 0xEF)
        length = 3, code = lead & 0x0F;
    else if (lead >= 0xF0 && lead <= 0xF4)
        length = 4, code = lead & 0x07;
    else
        return 0;
    for (size_t i = 1; i < length; i++) {
        if ((text[i] & 0xC0) != 0x80) /* also stops at the terminator */
            return 0;
        code = code << 6 | (text[i] & 0x3F);
    }
    static const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < smallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
        return 0;
    return length;
}

static void put_unicode_escape(unsigned code, void (*put)(void *, const char *, size_t),
                               void *context)
{
    static const char hex[] = "0123456789abcdef";
    char escape[6] = {
        '\\', 'u', hex[code >> 12 & 15], hex[code >> 8 & 15], hex[code >> 4 & 15], hex[code & 15]};
    put(context, escape, sizeof escape);
}

void json_escape_each(const char *text,
                      void (*put)(void *context, const char *bytes, size_t length), void *context)
{
    const unsigned char *at = (const unsigned char *)text;
    const unsigned char *plain = at; /* start of the run passed through unchanged */
    while (*at) {
        size_t length = utf8_sequence_length(at);
        bool special = length == 0 || *at == '"' || *at == '\\' || *at < 0x20 || *at == 0x7F;
        if (!special) {
            at += length;
            continue;
        }
        put(context, (const char *)plain, (size_t)(at - plain));
        if (*at == '"' || *at == '\\') {
            char escape[2] = {'\\', (char)*at};
            put(context, escape, sizeof escape);
        } else if (length == 0) {
            put_unicode_escape(0xDC00 + *at, put, context);
        } else {
            put_unicode_escape(*at, put, context);
        }
        plain = ++at;
    }
    put(context, (const char *)plain, (size_t)(at - plain));
}
