/* app.h - what the binary dispatcher and the text console share: board state and the actions on it. */
#ifndef APP_H
#define APP_H

#include <stdint.h>

/* Set while the host last spoke through the console: events are then printed as text. */
extern uint8_t app_console_mode;

/* Restart the host-silence timer and clear the host-silent flag. */
void app_host_contact(void);

/* Set the channels in mask to duty[0..2]; returns a VS_STATUS_*. */
uint8_t app_set_leds(uint8_t mask, const uint8_t *duty);

/* Returns VS_STATUS_OK or VS_STATUS_BAD_ARGUMENT. */
uint8_t app_set_host_timeout(uint16_t ms);
uint16_t app_host_timeout(void);

/* Reset through the watchdog once the current reply has been sent. */
void app_request_reset(void);

uint8_t app_flags(void);
uint8_t app_reset_cause(void);
const char *app_build_id(void); /* in RAM, NUL-terminated */

/* Console side: the line editor and the text form of events (console.c). */
void console_event(uint8_t op, const uint8_t *payload, uint8_t len);
void console_banner(void);

#endif /* APP_H */
