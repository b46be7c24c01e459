/* clock.c - millisecond time from the Timer0 overflow, which comes every 1024 us at 16 MHz / 64 / 256. */
#include "clock.h"

#include <avr/interrupt.h>
#include <avr/io.h>
#include <util/atomic.h>

static volatile uint32_t now_ms;
static volatile uint16_t now_frac_us;

ISR(TIMER0_OVF_vect) {
    /* 1024 us = 1 ms + 24 us; the 24 us carry into a whole millisecond now and then. */
    uint16_t frac = now_frac_us + 24;
    uint32_t ms = now_ms + 1;
    if (frac >= 1000) {
        frac -= 1000;
        ms++;
    }
    now_frac_us = frac;
    now_ms = ms;
}

void clock_init(void) {
    /* Fast PWM, TOP 0xFF, clk/64: the LED module connects the compare outputs. */
    TCCR0A = _BV(WGM01) | _BV(WGM00);
    TCCR0B = _BV(CS01) | _BV(CS00);
    TIMSK0 = _BV(TOIE0);
}

uint32_t clock_ms(void) {
    uint32_t ms;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { ms = now_ms; }
    return ms;
}
