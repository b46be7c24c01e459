/*
 * Veriscope controller firmware.
 *
 * What it does: drives the three LED channels (white ring, raking, UV) with PWM, the focus
 * stepper (STEP/DIR, homing switch, soft limits), reads the board temperature and the
 * trigger button, and speaks protocol version 1 (PROTOCOL.md) to the host at 115200 8N1,
 * in binary frames or as a typed console.
 *
 * What it assumes: an ATmega328P at 16 MHz with the Optiboot bootloader at 0x7E00, the
 * pin map in board.h, and a host that talks at least every host-silence timeout.
 *
 * What it gives up: no acceleration ramps (the focus motor is small and runs at a fixed
 * 4000 steps/s), no EEPROM settings (every boot starts from the defaults in protocol.h),
 * and reset causes the bootloader hides (MCUSR is cleared before the firmware runs): only
 * the watchdog and RESET request are told apart from power-on and external resets.
 *
 * It never wedges: the main loop feeds a 250 ms watchdog whose first expiry switches the
 * LEDs off and records the cause and whose second resets the chip; every wait is bounded;
 * and the LEDs go off when the host falls silent.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/wdt.h>
#include <string.h>

#include "app.h"
#include "clock.h"
#include "focus.h"
#include "frame.h"
#include "leds.h"
#include "protocol.h"
#include "sensors.h"
#include "uart.h"

#ifndef BUILD_ID
#define BUILD_ID "dev"
#endif

/* The image's identity, found by the flasher by its magic; layout in flash.py. */
struct fw_info {
    char magic[8];         /* "VSFWINFO" */
    uint8_t info_version;  /* 1 */
    uint8_t signature[3];  /* device signature of the MCU this image is for */
    uint8_t protocol;      /* VS_PROTOCOL_VERSION */
    uint8_t version[3];    /* major, minor, patch */
    char build_id[16];     /* NUL-padded */
};

static const struct fw_info fw_info PROGMEM __attribute__((used)) = {
    {'V', 'S', 'F', 'W', 'I', 'N', 'F', 'O'},
    1,
    {SIGNATURE_0, SIGNATURE_1, SIGNATURE_2},
    VS_PROTOCOL_VERSION,
    {FW_VERSION_MAJOR, FW_VERSION_MINOR, FW_VERSION_PATCH},
    BUILD_ID,
};

/* Survives a watchdog reset (not a power cycle): why the last reset happened, with its complement as a check. */
static uint8_t reset_marker __attribute__((section(".noinit")));
static uint8_t reset_marker_check __attribute__((section(".noinit")));

uint8_t app_console_mode;

static char build_id[17];
static uint8_t reset_cause;
static uint32_t last_host_ms;
static uint16_t host_timeout_ms = VS_HOST_TIMEOUT_DEFAULT_MS;
static uint8_t host_silent;
static uint8_t over_temp;
static uint8_t event_seq;

enum { ACTION_NONE, ACTION_RESET, ACTION_HANG };
static uint8_t pending_action;

/* The last response, sent again when the host resends the same request. */
static uint8_t cache_valid, cache_seq, cache_op, cache_len;
static uint8_t cache[VS_PAYLOAD_MAX];

/* After a watchdog reset the watchdog stays on at 16 ms. The bootloader normally turns it off,
 * but not on every path, so turn it off before the C runtime even starts. */
void early_wdt_off(void) __attribute__((naked, used, section(".init3")));
void early_wdt_off(void) {
    MCUSR = 0;
    wdt_disable();
}

static void mark_reset(uint8_t cause) {
    reset_marker = cause;
    reset_marker_check = (uint8_t)~cause;
}

/* First watchdog expiry: the main loop has stalled. Make the outputs safe; the reset follows. */
ISR(WDT_vect) {
    leds_all_off();
    mark_reset(VS_RESET_WATCHDOG);
}

static void watchdog_arm(void) {
    /* Interrupt first, then reset: WDIE + WDE at 250 ms. */
    uint8_t sreg = SREG;
    cli();
    wdt_reset();
    WDTCSR = _BV(WDCE) | _BV(WDE);
    WDTCSR = _BV(WDIE) | _BV(WDE) | _BV(WDP2);
    SREG = sreg;
}

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_i32(uint8_t *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (uint8_t i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i));
}

static void send_event(uint8_t op, const uint8_t *payload, uint8_t len) {
    if (app_console_mode) console_event(op, payload, len);
    else frame_send(event_seq, op, payload, len);
    event_seq++;
}

void app_host_contact(void) {
    last_host_ms = clock_ms();
    host_silent = 0;
}

uint8_t app_set_leds(uint8_t mask, const uint8_t *duty) {
    if (mask & (uint8_t)~0x07) return VS_STATUS_BAD_ARGUMENT;
    uint8_t lit = 0;
    for (uint8_t i = 0; i < VS_LED_COUNT; i++) {
        if (!(mask & (1u << i))) continue;
        if (duty[i] > 100) return VS_STATUS_BAD_ARGUMENT;
        lit |= duty[i];
    }
    if (lit && over_temp) return VS_STATUS_OVER_TEMP;
    for (uint8_t i = 0; i < VS_LED_COUNT; i++)
        if (mask & (1u << i)) leds_set(i, duty[i]);
    return VS_STATUS_OK;
}

uint8_t app_set_host_timeout(uint16_t ms) {
    if (ms < VS_HOST_TIMEOUT_MIN_MS || ms > VS_HOST_TIMEOUT_MAX_MS) return VS_STATUS_BAD_ARGUMENT;
    host_timeout_ms = ms;
    return VS_STATUS_OK;
}

uint16_t app_host_timeout(void) { return host_timeout_ms; }

void app_request_reset(void) { pending_action = ACTION_RESET; }

uint8_t app_flags(void) {
    return (focus_homed() ? VS_FLAG_HOMED : 0) | (over_temp ? VS_FLAG_OVER_TEMP : 0) |
           (host_silent ? VS_FLAG_HOST_SILENT : 0) | (sensors_button() ? VS_FLAG_BUTTON : 0) |
           (focus_switch_closed() ? VS_FLAG_HOME_SWITCH : 0);
}

uint8_t app_reset_cause(void) { return reset_cause; }

const char *app_build_id(void) { return build_id; }

/* Run one request; fills reply (status first) and returns its length. */
static uint8_t execute(uint8_t op, const uint8_t *p, uint8_t len, uint8_t *r) {
    r[0] = VS_STATUS_OK;
    switch (op) {
    case VS_OP_HELLO: {
        if (len != 1) break;
        uint8_t id_len = (uint8_t)strlen(build_id);
        r[1] = VS_PROTOCOL_VERSION;
        r[2] = VS_BOARD_ATMEGA328P;
        r[3] = FW_VERSION_MAJOR;
        r[4] = FW_VERSION_MINOR;
        r[5] = FW_VERSION_PATCH;
        put_u16(r + 6, VS_CAP_LEDS | VS_CAP_FOCUS | VS_CAP_TEMP | VS_CAP_BUTTON | VS_CAP_CONSOLE);
        r[8] = VS_PAYLOAD_MAX;
        memcpy(r + 9, build_id, id_len);
        return 9 + id_len;
    }
    case VS_OP_PING:
        if (len >= VS_PAYLOAD_MAX) break;
        memcpy(r + 1, p, len);
        return 1 + len;
    case VS_OP_GET_STATUS:
        if (len) break;
        for (uint8_t i = 0; i < VS_LED_COUNT; i++) r[1 + i] = leds_get(i);
        put_i32(r + 4, focus_position());
        put_i32(r + 8, focus_target());
        r[12] = focus_motion();
        r[13] = app_flags();
        put_u16(r + 14, (uint16_t)sensors_temperature_cc());
        put_i32(r + 16, (int32_t)clock_ms());
        r[20] = reset_cause;
        put_u16(r + 21, frame_crc_errors);
        put_u16(r + 23, frame_timeouts);
        return 25;
    case VS_OP_GET_CONFIG:
        if (len) break;
        put_i32(r + 1, VS_FOCUS_MIN_STEPS);
        put_i32(r + 5, VS_FOCUS_MAX_STEPS);
        put_u16(r + 9, VS_STEP_RATE_SPS);
        put_u16(r + 11, host_timeout_ms);
        put_u16(r + 13, VS_OVER_TEMP_CC);
        put_u16(r + 15, VS_OVER_TEMP_CLEAR_CC);
        return 17;
    case VS_OP_SET_HOST_TIMEOUT:
        if (len != 2) break;
        r[0] = app_set_host_timeout((uint16_t)(p[0] | (p[1] << 8)));
        return 1;
    case VS_OP_SET_LEDS:
        if (len != 4) break;
        r[0] = app_set_leds(p[0], p + 1);
        if (r[0] != VS_STATUS_OK) return 1;
        for (uint8_t i = 0; i < VS_LED_COUNT; i++) r[1 + i] = leds_get(i);
        return 4;
    case VS_OP_MOVE_FOCUS:
        if (len != 4) break;
        r[0] = focus_move((int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24)));
        return 1;
    case VS_OP_HOME_FOCUS:
        if (len) break;
        r[0] = focus_home();
        return 1;
    case VS_OP_STOP_FOCUS:
        if (len) break;
        focus_stop();
        return 1;
    case VS_OP_RESET:
        if (len != 4 || memcmp_P(p, PSTR(VS_RESET_MAGIC), 4)) {
            r[0] = VS_STATUS_BAD_ARGUMENT;
        } else {
            pending_action = ACTION_RESET;
        }
        return 1;
    case VS_OP_DEBUG_HANG:
        if (len != 4 || memcmp_P(p, PSTR(VS_HANG_MAGIC), 4)) {
            r[0] = VS_STATUS_BAD_ARGUMENT;
        } else {
            pending_action = ACTION_HANG;
        }
        return 1;
    default:
        r[0] = VS_STATUS_UNKNOWN_OP;
        return 1;
    }
    r[0] = VS_STATUS_BAD_LENGTH;
    return 1;
}

void app_frame(uint8_t seq, uint8_t op, const uint8_t *payload, uint8_t len) {
    app_host_contact();
    app_console_mode = 0;
    if (op == VS_OP_HELLO) {
        cache_valid = 0;
    } else if (cache_valid && seq == cache_seq && op == cache_op) {
        frame_send(seq, op | VS_OP_RESPONSE_BIT, cache, cache_len);
        return;
    }
    cache_len = execute(op, payload, len, cache);
    cache_valid = 1;
    cache_seq = seq;
    cache_op = op;
    frame_send(seq, op | VS_OP_RESPONSE_BIT, cache, cache_len);
}

static void do_pending_action(void) {
    /* Let the reply leave first; 20 ms covers a full transmit ring. */
    uart_flush(20);
    if (pending_action == ACTION_RESET) {
        mark_reset(VS_RESET_SOFTWARE);
        leds_all_off();
        cli();
        wdt_enable(WDTO_15MS);
        wdt_reset(); /* start the short period now rather than at the end of the current one */
        for (;;) {
        }
    }
    /* ACTION_HANG: a stalled main loop with interrupts still running, which only the watchdog ends. */
    for (;;) {
    }
}

static void check_safety(void) {
    if (sensors_take_new_temperature()) {
        int16_t t = sensors_temperature_cc();
        uint8_t ev[3];
        if (!over_temp && t >= VS_OVER_TEMP_CC) {
            over_temp = 1;
            leds_all_off();
            ev[0] = 1;
        } else if (over_temp && t < VS_OVER_TEMP_CLEAR_CC) {
            over_temp = 0;
            ev[0] = 0;
        } else {
            ev[0] = 0xFF;
        }
        if (ev[0] != 0xFF) {
            put_u16(ev + 1, (uint16_t)t);
            send_event(VS_EV_OVER_TEMP, ev, 3);
        }
    }
    /* A fresh reading: a frame handled in this pass may have moved last_host_ms past the pass's start. */
    if (leds_any_on() && (uint32_t)(clock_ms() - last_host_ms) > host_timeout_ms) {
        uint8_t ev[2];
        leds_all_off();
        host_silent = 1;
        put_u16(ev, host_timeout_ms);
        send_event(VS_EV_HOST_SILENT, ev, 2);
    }
}

static void report_events(void) {
    uint8_t reason = focus_take_done();
    if (reason != FOCUS_NO_EVENT) {
        uint8_t ev[5];
        put_i32(ev, focus_position());
        ev[4] = reason;
        send_event(VS_EV_MOVE_DONE, ev, 5);
    }
    uint8_t button = sensors_take_button_event();
    if (button != SENSORS_NO_EVENT) send_event(VS_EV_BUTTON, &button, 1);
}

int main(void) {
    uint8_t expected_check = (uint8_t)~reset_marker;
    reset_cause = (reset_marker_check == expected_check && reset_marker <= VS_RESET_SOFTWARE) ? reset_marker
                                                                                             : VS_RESET_POWER_OR_EXTERNAL;
    mark_reset(VS_RESET_POWER_OR_EXTERNAL);
    memcpy_P(build_id, fw_info.build_id, sizeof fw_info.build_id);
    build_id[16] = 0;

    clock_init();
    leds_init();
    focus_init();
    sensors_init();
    uart_init();
    sei();
    watchdog_arm();
    last_host_ms = clock_ms();

    console_banner();
    uint8_t boot[5] = {VS_PROTOCOL_VERSION, FW_VERSION_MAJOR, FW_VERSION_MINOR, FW_VERSION_PATCH, reset_cause};
    send_event(VS_EV_BOOT, boot, sizeof boot);

    uint32_t last_fed_ms = 0;
    for (;;) {
        uint32_t now = clock_ms();
        /* Feed the watchdog once per millisecond tick: plenty for 250 ms, and cheap. */
        if (now != last_fed_ms) {
            last_fed_ms = now;
            wdt_reset();
            if (!(WDTCSR & _BV(WDIE))) {
                /* The watchdog interrupt fired but the loop came back: re-arm it, and forget the cause. */
                watchdog_arm();
                mark_reset(VS_RESET_POWER_OR_EXTERNAL);
            }
        }
        uint8_t b;
        while (!pending_action && uart_getc(&b)) frame_rx(b, now);
        if (pending_action) do_pending_action();
        frame_poll(now);
        sensors_poll(now);
        report_events();
        check_safety();
    }
}
