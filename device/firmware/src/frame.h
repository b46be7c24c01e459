/* frame.h - protocol v1 framing: the receive state machine with resynchronisation, and frame output. */
#ifndef FRAME_H
#define FRAME_H

#include <stdint.h>

#include "protocol.h"

/* Called for every good frame. */
void app_frame(uint8_t seq, uint8_t op, const uint8_t *payload, uint8_t len);
/* Called for every byte outside a frame (console text). */
void console_byte(uint8_t b);
/* Called when a candidate frame is rejected, so the console drops its current line. */
void console_poison(void);

/* Feed one received byte. */
void frame_rx(uint8_t b, uint32_t now_ms);

/* Drop a partial frame that has stalled for VS_FRAME_TIMEOUT_MS. */
void frame_poll(uint32_t now_ms);

/* Send one frame. */
void frame_send(uint8_t seq, uint8_t op, const uint8_t *payload, uint8_t len);

extern uint16_t frame_crc_errors;
extern uint16_t frame_timeouts;

#endif /* FRAME_H */
