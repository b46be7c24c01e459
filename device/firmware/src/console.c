/* console.c - the human-typable console: one command per line, one reply line, events as "!" lines.
 *
 * Only printable ASCII builds a line. Any other byte, or a rejected binary frame, poisons
 * the line so that the tail of a broken frame can never run as a command.
 */
#include <avr/pgmspace.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "clock.h"
#include "focus.h"
#include "frame.h"
#include "leds.h"
#include "protocol.h"
#include "sensors.h"
#include "uart.h"

#define LINE_MAX 40
#define MAX_WORDS 3

static char line[LINE_MAX + 1];
static uint8_t line_len;
static uint8_t poisoned;

static const char channel_names[3][7] PROGMEM = {"white", "raking", "uv"};
static const char reason_names[4][12] PROGMEM = {"reached", "homed", "stopped", "home_failed"};
static const char motion_names[3][7] PROGMEM = {"idle", "moving", "homing"};

static void crlf(void) { uart_puts_P(PSTR("\r\n")); }

static void print_leds(void) {
    uart_puts_P(PSTR("led"));
    for (uint8_t i = 0; i < VS_LED_COUNT; i++) {
        uart_putc(' ');
        uart_puts_P(channel_names[i]);
        uart_putc('=');
        uart_put_i32(leds_get(i));
    }
}

void console_banner(void) {
    uart_puts_P(PSTR("veriscope-controller " FW_VERSION_STRING " protocol "));
    uart_put_i32(VS_PROTOCOL_VERSION);
    uart_puts_P(PSTR(" build "));
    uart_puts(app_build_id());
    uart_puts_P(PSTR(" reset="));
    uart_put_i32(app_reset_cause());
    uart_puts_P(PSTR("; type help"));
    crlf();
}

void console_event(uint8_t op, const uint8_t *p, uint8_t len) {
    (void)len;
    uart_puts_P(PSTR("! "));
    switch (op) {
    case VS_EV_BOOT:
        uart_puts_P(PSTR("boot reset="));
        uart_put_i32(p[4]);
        break;
    case VS_EV_BUTTON:
        uart_puts_P(p[0] ? PSTR("button pressed") : PSTR("button released"));
        break;
    case VS_EV_MOVE_DONE: {
        int32_t pos = (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        uart_puts_P(PSTR("move_done pos="));
        uart_put_i32(pos);
        uart_puts_P(PSTR(" reason="));
        if (p[4] < 4) uart_puts_P(reason_names[p[4]]);
        break;
    }
    case VS_EV_OVER_TEMP:
        uart_puts_P(p[0] ? PSTR("over_temp on temp=") : PSTR("over_temp off temp="));
        uart_put_centi((int16_t)((uint16_t)p[1] | ((uint16_t)p[2] << 8)));
        break;
    case VS_EV_HOST_SILENT:
        uart_puts_P(PSTR("host_silent timeout_ms="));
        uart_put_i32((uint16_t)p[0] | ((uint16_t)p[1] << 8));
        break;
    default:
        uart_puts_P(PSTR("event"));
        break;
    }
    crlf();
}

/* Parse a decimal, optionally negative; 0 if the word is not one. */
static uint8_t parse_int(const char *s, int32_t *out) {
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s || (*s != '-' && (*s < '0' || *s > '9'))) return 0;
    *out = v;
    return 1;
}

static void err(const char *name_P) {
    uart_puts_P(PSTR("err "));
    uart_puts_P(name_P);
}

static void run(char **w, uint8_t n) {
    const char *cmd = w[0];
    int32_t v;
    if (!strcmp_P(cmd, PSTR("help"))) {
        uart_puts_P(PSTR("ok commands: hello status led off home move stop timeout reset"));
    } else if (!strcmp_P(cmd, PSTR("hello"))) {
        uart_puts_P(PSTR("ok veriscope-controller " FW_VERSION_STRING " protocol "));
        uart_put_i32(VS_PROTOCOL_VERSION);
        uart_puts_P(PSTR(" build "));
        uart_puts(app_build_id());
    } else if (!strcmp_P(cmd, PSTR("status"))) {
        uart_puts_P(PSTR("ok "));
        print_leds();
        uart_puts_P(PSTR(" focus="));
        uart_put_i32(focus_position());
        uart_puts_P(PSTR(" target="));
        uart_put_i32(focus_target());
        uart_puts_P(PSTR(" motion="));
        uart_puts_P(motion_names[focus_motion()]);
        uart_puts_P(PSTR(" homed="));
        uart_put_i32(focus_homed());
        uart_puts_P(PSTR(" temp="));
        uart_put_centi(sensors_temperature_cc());
        uart_puts_P(PSTR(" flags=0x"));
        uint8_t f = app_flags();
        uart_putc((uint8_t)("0123456789abcdef"[f >> 4]));
        uart_putc((uint8_t)("0123456789abcdef"[f & 15]));
        uart_puts_P(PSTR(" uptime_ms="));
        uart_put_i32((int32_t)clock_ms());
    } else if (!strcmp_P(cmd, PSTR("led"))) {
        uint8_t ch = 0xFF;
        for (uint8_t i = 0; n == 3 && i < VS_LED_COUNT; i++)
            if (!strcmp_P(w[1], channel_names[i])) ch = i;
        if (ch == 0xFF || !parse_int(w[2], &v) || v < 0 || v > 100) {
            err(PSTR("BAD_ARGUMENT led <white|raking|uv> <0-100>"));
        } else {
            uint8_t duty[VS_LED_COUNT] = {0, 0, 0};
            duty[ch] = (uint8_t)v;
            if (app_set_leds((uint8_t)(1u << ch), duty) == VS_STATUS_OVER_TEMP) {
                err(PSTR("OVER_TEMP LEDs held off"));
            } else {
                uart_puts_P(PSTR("ok "));
                print_leds();
            }
        }
    } else if (!strcmp_P(cmd, PSTR("off"))) {
        uint8_t duty[VS_LED_COUNT] = {0, 0, 0};
        app_set_leds(0x07, duty);
        uart_puts_P(PSTR("ok "));
        print_leds();
    } else if (!strcmp_P(cmd, PSTR("home"))) {
        if (focus_home() == VS_STATUS_OK) uart_puts_P(PSTR("ok homing"));
        else err(PSTR("BUSY homing"));
    } else if (!strcmp_P(cmd, PSTR("move"))) {
        if (n != 2 || !parse_int(w[1], &v)) {
            err(PSTR("BAD_ARGUMENT move <steps>"));
        } else {
            uint8_t s = focus_move(v);
            if (s == VS_STATUS_OK) {
                uart_puts_P(PSTR("ok moving to "));
                uart_put_i32(v);
            } else if (s == VS_STATUS_OUT_OF_RANGE) {
                err(PSTR("OUT_OF_RANGE limits 0..12000"));
            } else if (s == VS_STATUS_NOT_HOMED) {
                err(PSTR("NOT_HOMED"));
            } else {
                err(PSTR("BUSY"));
            }
        }
    } else if (!strcmp_P(cmd, PSTR("stop"))) {
        focus_stop();
        uart_puts_P(PSTR("ok stopped"));
    } else if (!strcmp_P(cmd, PSTR("timeout"))) {
        if (n != 2 || !parse_int(w[1], &v) || v < 0 || v > 65535 || app_set_host_timeout((uint16_t)v) != VS_STATUS_OK) {
            err(PSTR("BAD_ARGUMENT timeout <100-60000>"));
        } else {
            uart_puts_P(PSTR("ok timeout_ms="));
            uart_put_i32(app_host_timeout());
        }
    } else if (!strcmp_P(cmd, PSTR("reset"))) {
        uart_puts_P(PSTR("ok resetting"));
        app_request_reset();
    } else {
        err(PSTR("UNKNOWN_OP try help"));
    }
    crlf();
}

static void execute_line(void) {
    char *words[MAX_WORDS];
    uint8_t n = 0;
    uint8_t extra = 0;
    line[line_len] = 0;
    /* Split on spaces in place; more than MAX_WORDS words makes every command's argument check fail. */
    for (char *c = line; *c;) {
        while (*c == ' ') *c++ = 0;
        if (!*c) break;
        if (n < MAX_WORDS) words[n++] = c;
        else extra = 1;
        while (*c && *c != ' ') c++;
    }
    if (n == 0) return;
    for (char *c = words[0]; *c; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c + 32);
    app_host_contact();
    app_console_mode = 1;
    run(words, extra ? MAX_WORDS + 1 : n);
}

void console_poison(void) { poisoned = 1; }

void console_byte(uint8_t b) {
    if (b == '\r' || b == '\n') {
        if (line_len && !poisoned) execute_line();
        line_len = 0;
        poisoned = 0;
    } else if (b == 0x08 || b == 0x7F) {
        if (line_len) line_len--;
    } else if (b >= 0x20 && b < 0x7F) {
        if (line_len < LINE_MAX) line[line_len++] = (char)b;
        else poisoned = 1;
    } else {
        poisoned = 1;
    }
}
