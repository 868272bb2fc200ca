/*
 * crc32c.c - CRC-32C (Castagnoli: iSCSI, ext4) for per-tensor checksums:
 * the checksum of a buffer on ISA-L's accelerated crc32_iscsi, and the
 * algebra that joins checksums of pieces computed apart (concatenation,
 * and a tensor's runs held by several ranks, reduced by XOR).  The only
 * user of ISA-L.
 *
 * The algebra.  A CRC register is a polynomial over GF(2) modulo P (the
 * Castagnoli polynomial, bit-reflected: 0x82F63B78, bit 31 the constant
 * term).  Feeding n zero bytes multiplies the register by x^(8n) mod P
 * (hfdcp__crc32c_shift).  Write crc0(m) for the register after m from
 * register 0, with no final xor: it is linear in m, and
 *   crc0(A || B)  = shift(crc0(A), |B|) ^ crc0(B)
 *   crc32c(m)     = crc0(m) ^ shift(~0, |m|) ^ ~0     (~0 = 0xFFFFFFFF)
 * so a tensor's crc0 is the XOR over its runs of shift(crc0(run), bytes
 * after the run), whoever holds each run, and its CRC-32C follows from
 * that XOR and its length alone (hfdcp__crc32c_finish).
 */
#include <isa-l/crc.h>

#include "hfdcp_internal.h"

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */
#define X0 0x80000000u   /* the polynomial 1 (x^0), reflected */

/* ISA-L takes an int length (a negative one crashes it): bigger buffers go
 * in pieces of this size. */
#define ISAL_MAX_LEN ((size_t)1 << 30)

/* X8N[k] = x^(8 * 2^k) mod P: shifting by 2^k bytes.  Each entry is the
 * square of the one before it (x^8 first); test_crc32c checks that each
 * is, against a bitwise CRC for the first.  The sequence repeats with
 * period 31 (x^(2^31) = x mod P); it is kept whole so that a bit of a
 * 64-bit length is its index. */
static const uint32_t X8N[64] = {
    0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a,
    0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a,
    0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc, 0xfe7740e6, 0xf946610b,
    0x3c204f8f, 0x538586e3, 0x59726915, 0x734d5309, 0xbc1ac763, 0x7d0722cc,
    0xd289cabe, 0xe94ca9bc, 0x05b74f3f, 0xa51e1f42, 0x40000000, 0x20000000,
    0x08000000, 0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18,
    0x510ac59a, 0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16,
    0x0d65762a, 0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc, 0xfe7740e6,
    0xf946610b, 0x3c204f8f, 0x538586e3, 0x59726915, 0x734d5309, 0xbc1ac763,
    0x7d0722cc, 0xd289cabe, 0xe94ca9bc, 0x05b74f3f, 0xa51e1f42, 0x40000000,
    0x20000000, 0x08000000, 0x00800000, 0x00008000,
};

/* The register after `buf` from register `reg`, no final xor.  ISA-L's
 * crc32_iscsi is exactly that: its init is the register as is (no
 * inversion on the way in or out). */
static uint32_t update(uint32_t reg, const void *buf, size_t len)
{
    /* Note: crc32_iscsi's buffer is not const, but it only reads it. */
    unsigned char *p = (unsigned char *)buf;

    while (len > 0) {
        size_t n = len < ISAL_MAX_LEN ? len : ISAL_MAX_LEN;
        reg = crc32_iscsi(p, (int)n, reg);
        p += n;
        len -= n;
    }
    return reg;
}

/* a * b mod P, both reflected (zlib's multmodp, without its branches,
 * which mispredict on random bits): a's bits from x^0 (bit 31) up, b
 * times x at each step. */
static uint32_t mulmod(uint32_t a, uint32_t b)
{
    uint32_t p = 0;

    for (int i = 31; i >= 0; i--) {
        p ^= b & (0u - ((a >> i) & 1));
        b = (b >> 1) ^ (POLY & (0u - (b & 1)));
    }
    return p;
}

/* x^(8n) mod P: one product per set bit of n. */
static uint32_t x8n(uint64_t n)
{
    uint32_t p = X0;

    for (int k = 0; n != 0; k++, n >>= 1)
        if (n & 1)
            p = mulmod(X8N[k], p);
    return p;
}

uint32_t hfdcp__crc32c(uint32_t crc, const void *buf, size_t len)
{
    return ~update(~crc, buf, len);
}

uint32_t hfdcp__crc32c_shift(uint32_t reg, uint64_t len)
{
    return len == 0 ? reg : mulmod(x8n(len), reg);
}

uint32_t hfdcp__crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2)
{
    /* Both carry their init and final xor; they cancel (see the top). */
    return hfdcp__crc32c_shift(crc1, len2) ^ crc2;
}

/* r->crc0 moved `gap` bytes on: a column split repeats one gap, whose
 * x^(8 gap) is kept. */
static uint32_t shift_gap(hfdcp__crc32c_runs *r, uint64_t gap)
{
    if (gap == 0)
        return r->crc0;
    if (gap != r->gap) {
        r->gap = gap;
        r->gap_x8n = x8n(gap);
    }
    return mulmod(r->gap_x8n, r->crc0);
}

void hfdcp__crc32c_runs_add(hfdcp__crc32c_runs *r, uint64_t offset,
                            const void *buf, size_t len)
{
    uint64_t end = offset + len;

    if (len == 0)
        return;
    if (offset >= r->end) {
        /* In file order: move over the gap, then feed the run. */
        r->crc0 = update(shift_gap(r, offset - r->end), buf, len);
        r->end = end;
        return;
    }
    /* Before the end of a run already added: the run moves to r->end,
     * or r->crc0 to the run's end when it reaches further. */
    uint64_t new_end = end > r->end ? end : r->end;
    r->crc0 = hfdcp__crc32c_shift(r->crc0, new_end - r->end) ^
              hfdcp__crc32c_shift(update(0, buf, len), new_end - end);
    r->end = new_end;
}

uint32_t hfdcp__crc32c_runs_part(const hfdcp__crc32c_runs *r,
                                 uint64_t tensor_len)
{
    return hfdcp__crc32c_shift(r->crc0, tensor_len - r->end);
}

uint32_t hfdcp__crc32c_finish(uint32_t parts, uint64_t tensor_len)
{
    return parts ^ hfdcp__crc32c_shift(0xFFFFFFFFu, tensor_len) ^ 0xFFFFFFFFu;
}
