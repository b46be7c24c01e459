/* leds.h - the three LED channels as PWM duty in percent. */
#ifndef LEDS_H
#define LEDS_H

#include <stdint.h>

#include "protocol.h"

/* Outputs low; Timer2 set up for the UV channel (Timer0 is clock_init's). */
void leds_init(void);

/* Set channel ch (0 white, 1 raking, 2 uv) to duty_pct (0..100, larger is clamped). */
void leds_set(uint8_t ch, uint8_t duty_pct);

/* Every channel off. Safe to call from an interrupt. */
void leds_all_off(void);

uint8_t leds_get(uint8_t ch);

/* Whether any channel is lit. */
uint8_t leds_any_on(void);

#endif /* LEDS_H */
