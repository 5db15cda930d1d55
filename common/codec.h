/* The one place the project turns bytes into text and back: strict
 * base64 and base64url (RFC 4648), hex, a UTF-8 validator and a decimal
 * integer parser. Every decoder accepts exactly one spelling of each
 * value, so that two different strings never mean the same credential,
 * topic or number. No I/O, no globals; the allocating variants use
 * malloc() and the caller frees. */
#ifndef AUTHD_CODEC_H
#define AUTHD_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* ---- base64 --------------------------------------------------------
 * Flags for the base64 calls; 0 is RFC 4648 §4 (standard alphabet,
 * padded to a multiple of four). */
enum {
    /* RFC 4648 §5 alphabet ('-' '_'), unpadded (as JWS uses it): '=' is
     * refused on decode and not written on encode. */
    CODEC_B64_URL = 1,
    /* Decode: skip ASCII space, tab, CR and LF anywhere (PEM bodies and
     * EST requests wrap their lines). Encode: end each 64-character
     * line, and the last one, with '\n'. */
    CODEC_B64_LINES = 2,
    /* The standard alphabet unpadded, as PHC strings (argon2's encoded
     * hashes) write it: '=' is refused on decode and not written. */
    CODEC_B64_NOPAD = 4
};

/* The exact number of characters codec_b64_encode writes for n bytes
 * (without a NUL). */
size_t codec_b64_encoded_len(size_t n, int flags);
/* Writes the encoding of in[0..n) to out, which must hold
 * codec_b64_encoded_len(n, flags) characters; no NUL is written.
 * Returns the number of characters written. */
size_t codec_b64_encode(const uint8_t *in, size_t n, char *out, int flags);
/* The same as a NUL-terminated malloc()ed string, or NULL if out of
 * memory. */
char *codec_b64_encode_alloc(const uint8_t *in, size_t n, int flags);

/* An upper bound on the bytes that n characters of base64 decode to. */
size_t codec_b64_decoded_max(size_t n);
/* Decodes in[0..n) strictly: only the alphabet the flags select; with
 * the standard alphabet the text (whitespace aside) must be a multiple of
 * four with one or two '=' only where bytes end; with CODEC_B64_URL the
 * length mod 4 must not be 1; in both the unused low bits of the last
 * character must be zero. Writes at most cap bytes to out and their
 * count to *out_len. Returns 0, or -1 (bad input, or more than cap
 * bytes), in which case *out_len is 0 and out may hold partial output. */
int codec_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap,
                     size_t *out_len, int flags);
/* The same into a malloc()ed buffer (*out, caller frees) of at most max
 * bytes. Returns 0, or -1 with *out NULL and *out_len 0. An empty input
 * decodes to a non-NULL empty buffer. */
int codec_b64_decode_alloc(const char *in, size_t n, size_t max,
                           uint8_t **out, size_t *out_len, int flags);

/* ---- hex ----------------------------------------------------------- */
enum { CODEC_HEX_UPPER = 1 };
/* Writes 2n hex digits (lowercase unless CODEC_HEX_UPPER) and a NUL to
 * out, which must hold 2n + 1 characters. */
void codec_hex_encode(const uint8_t *in, size_t n, char *out, int flags);
/* The value of one hex digit (either case), or -1. */
int codec_hex_val(int c);
/* Decodes exactly n hex digits (either case, n even) into out, at most
 * cap bytes, and their count to *out_len. Returns 0, or -1 (odd length,
 * a non-digit, or too long) with *out_len 0. */
int codec_hex_decode(const char *in, size_t n, uint8_t *out, size_t cap,
                     size_t *out_len);

/* ---- UTF-8 ---------------------------------------------------------
 * Well-formed UTF-8 per RFC 3629: no overlong forms, no surrogates
 * (U+D800..U+DFFF), nothing past U+10FFFF, no truncated sequences. */

/* Decodes the sequence at s[0..avail) into *cp. Returns its length
 * (1..4), or 0 if it is not well formed (or avail is 0); *cp is then 0.
 * NUL is a well-formed one-byte sequence here; callers decide whether
 * they allow it. */
size_t codec_utf8_decode(const uint8_t *s, size_t avail, uint32_t *cp);
/* 1 if s[0..n) is well-formed UTF-8 containing no NUL byte, else 0. NUL
 * is refused because every consumer ends up in a C string, where it
 * would silently cut the value short. */
int codec_utf8_valid(const char *s, size_t n);
/* Writes code point cp as UTF-8 to out (room for 4). Returns the length
 * (1..4), or 0 for a surrogate or a value past U+10FFFF (nothing
 * written). */
size_t codec_utf8_encode(uint32_t cp, uint8_t out[4]);

/* ---- integers ------------------------------------------------------ */

/* Parses s as a decimal integer in [0, max]: one or more ASCII digits and
 * nothing else (no sign, no space, no "0x"; leading zeros are allowed).
 * Returns 0 and sets *out, or -1 (empty, NULL, a non-digit, overflow, or
 * a value above max) leaving *out unchanged. */
int codec_parse_u64(const char *s, uint64_t max, uint64_t *out);
/* The same for [min, max] with an optional leading '-' (never '+', and
 * never "-0"). */
int codec_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
