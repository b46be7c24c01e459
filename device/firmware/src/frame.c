/* frame.c - framing as PROTOCOL.md specifies: SOF, LEN, SEQ, OP, payload, CRC-16/CCITT-FALSE (little-endian).
 *
 * Received bytes collect in buf while they may still be a frame. A rejected candidate
 * (impossible length, bad CRC, stalled) drops only its SOF, and the bytes after it are
 * scanned again, so a real frame that followed a stray SOF is not lost.
 */
#include "frame.h"

#include <string.h>
#include <util/crc16.h>

#include "uart.h"

#define FRAME_MAX (VS_PAYLOAD_MAX + VS_FRAME_OVERHEAD)

static uint8_t buf[FRAME_MAX];
static uint8_t buf_len;
static uint32_t last_rx_ms;

uint16_t frame_crc_errors;
uint16_t frame_timeouts;

static uint16_t crc_of(const uint8_t *data, uint8_t len) {
    uint16_t crc = 0xFFFF;
    while (len--) crc = _crc_xmodem_update(crc, *data++);
    return crc;
}

static void drop(uint8_t n) {
    memmove(buf, buf + n, buf_len - n);
    buf_len -= n;
}

/* Consume whatever buf holds: text, complete frames, rejects. Stops at an incomplete frame. */
static void scan(void) {
    while (buf_len) {
        if (buf[0] != VS_SOF) {
            console_byte(buf[0]);
            drop(1);
            continue;
        }
        if (buf_len < 2) return;
        uint8_t len = buf[1];
        if (len > VS_PAYLOAD_MAX) {
            frame_crc_errors++;
            console_poison();
            drop(1);
            continue;
        }
        uint8_t total = len + VS_FRAME_OVERHEAD;
        if (buf_len < total) return;
        uint16_t crc = (uint16_t)buf[4 + len] | ((uint16_t)buf[5 + len] << 8);
        if (crc != crc_of(buf + 1, len + 3)) {
            frame_crc_errors++;
            console_poison();
            drop(1);
            continue;
        }
        /* Copy out first: handling the frame may send frames, but never receive into buf. */
        uint8_t payload[VS_PAYLOAD_MAX];
        uint8_t seq = buf[2], op = buf[3];
        memcpy(payload, buf + 4, len);
        drop(total);
        app_frame(seq, op, payload, len);
    }
}

void frame_rx(uint8_t b, uint32_t now_ms) {
    last_rx_ms = now_ms;
    if (buf_len == 0 && b != VS_SOF) {
        console_byte(b);
        return;
    }
    buf[buf_len++] = b;
    scan();
}

void frame_poll(uint32_t now_ms) {
    if (buf_len && (uint32_t)(now_ms - last_rx_ms) > VS_FRAME_TIMEOUT_MS) {
        frame_timeouts++;
        console_poison();
        drop(1);
        scan();
    }
}

void frame_send(uint8_t seq, uint8_t op, const uint8_t *payload, uint8_t len) {
    uint8_t head[3] = {len, seq, op};
    uint16_t crc = crc_of(head, 3);
    for (uint8_t i = 0; i < len; i++) crc = _crc_xmodem_update(crc, payload[i]);
    uart_putc(VS_SOF);
    uart_write(head, 3);
    uart_write(payload, len);
    uart_putc((uint8_t)crc);
    uart_putc((uint8_t)(crc >> 8));
}
