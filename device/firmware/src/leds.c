/* leds.c - LED PWM: white ring on OC0A, raking on OC0B, UV on OC2B, all fast PWM at 976 Hz.
 *
 * 0 % and 100 % disconnect the compare output and drive the pin low or high, since fast
 * PWM cannot produce either exactly. Otherwise OCR = duty * 256 / 100 - 1, so the output
 * is high for (OCR + 1) / 256 of each period, within 0.4 % of the request.
 */
#include "leds.h"

#include <avr/io.h>
#include <util/atomic.h>

#include "board.h"

static uint8_t duty[VS_LED_COUNT];

void leds_init(void) {
    PORTD &= (uint8_t)~(_BV(LED_WHITE_BIT) | _BV(LED_RAKING_BIT) | _BV(LED_UV_BIT));
    DDRD |= _BV(LED_WHITE_BIT) | _BV(LED_RAKING_BIT) | _BV(LED_UV_BIT);
    /* Timer2: fast PWM, TOP 0xFF, clk/64, the same 976 Hz as Timer0. */
    TCCR2A = _BV(WGM21) | _BV(WGM20);
    TCCR2B = _BV(CS22);
}

static void apply(volatile uint8_t *tccra, uint8_t com_bit, volatile uint8_t *ocr, uint8_t pin_bit, uint8_t pct) {
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        if (pct == 0 || pct >= 100) {
            *tccra &= (uint8_t)~_BV(com_bit);
            if (pct) PORTD |= _BV(pin_bit);
            else PORTD &= (uint8_t)~_BV(pin_bit);
        } else {
            *ocr = (uint8_t)(((uint16_t)pct * 256u) / 100u - 1u);
            *tccra |= _BV(com_bit);
        }
    }
}

void leds_set(uint8_t ch, uint8_t duty_pct) {
    if (duty_pct > 100) duty_pct = 100;
    if (ch >= VS_LED_COUNT) return;
    duty[ch] = duty_pct;
    switch (ch) {
    case 0: apply(&TCCR0A, COM0A1, &OCR0A, LED_WHITE_BIT, duty_pct); break;
    case 1: apply(&TCCR0A, COM0B1, &OCR0B, LED_RAKING_BIT, duty_pct); break;
    default: apply(&TCCR2A, COM2B1, &OCR2B, LED_UV_BIT, duty_pct); break;
    }
}

void leds_all_off(void) {
    TCCR0A &= (uint8_t)~(_BV(COM0A1) | _BV(COM0B1));
    TCCR2A &= (uint8_t)~_BV(COM2B1);
    PORTD &= (uint8_t)~(_BV(LED_WHITE_BIT) | _BV(LED_RAKING_BIT) | _BV(LED_UV_BIT));
    for (uint8_t i = 0; i < VS_LED_COUNT; i++) duty[i] = 0;
}

uint8_t leds_get(uint8_t ch) { return ch < VS_LED_COUNT ? duty[ch] : 0; }

uint8_t leds_any_on(void) { return duty[0] | duty[1] | duty[2]; }
