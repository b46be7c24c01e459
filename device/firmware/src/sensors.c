/* sensors.c - temperature every 100 ms without blocking on the ADC, and a 20 ms button debounce.
 *
 * A conversion is started and collected on a later pass, so the main loop never waits for
 * the ADC; one that has not finished within 10 ms is abandoned and restarted.
 */
#include "sensors.h"

#include <avr/io.h>

#include "board.h"

#define TEMP_PERIOD_MS 100
#define ADC_TIMEOUT_MS 10
#define DEBOUNCE_MS 20

static int16_t temperature_cc = 2500;
static uint8_t new_temperature;
static uint32_t adc_started_ms;
static uint8_t adc_busy;
static uint32_t next_sample_ms;

static uint8_t button_state;
static uint8_t button_event = SENSORS_NO_EVENT;
static uint32_t button_changed_ms;
static uint8_t button_raw_last;
static uint32_t last_poll_ms;

void sensors_init(void) {
    DDRD &= (uint8_t)~_BV(BUTTON_BIT);
    PORTD |= _BV(BUTTON_BIT);
    ADMUX = _BV(REFS0) | TEMP_ADC_CHANNEL; /* AVcc reference */
    ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0); /* 125 kHz ADC clock */
    DIDR0 = 0;
}

static void adc_start(uint32_t now_ms) {
    ADMUX = _BV(REFS0) | TEMP_ADC_CHANNEL;
    ADCSRA |= _BV(ADSC);
    adc_started_ms = now_ms;
    adc_busy = 1;
}

void sensors_poll(uint32_t now_ms) {
    if (adc_busy) {
        if (!(ADCSRA & _BV(ADSC))) {
            uint16_t raw = ADC;
            /* mV = raw * 5000 / 1024; degC = (mV - 500) / 10; in hundredths: */
            temperature_cc = (int16_t)(((int32_t)raw * 50000L) / 1024L - 5000L);
            new_temperature = 1;
            adc_busy = 0;
        } else if ((uint32_t)(now_ms - adc_started_ms) > ADC_TIMEOUT_MS) {
            adc_busy = 0; /* abandoned; the next period starts afresh */
        }
    } else if ((int32_t)(now_ms - next_sample_ms) >= 0) {
        next_sample_ms = now_ms + TEMP_PERIOD_MS;
        adc_start(now_ms);
    }

    if (now_ms == last_poll_ms) return;
    last_poll_ms = now_ms;
    uint8_t raw = !(PIND & _BV(BUTTON_BIT));
    if (raw != button_raw_last) {
        button_raw_last = raw;
        button_changed_ms = now_ms;
    } else if (raw != button_state && (uint32_t)(now_ms - button_changed_ms) >= DEBOUNCE_MS) {
        button_state = raw;
        button_event = raw;
    }
}

int16_t sensors_temperature_cc(void) { return temperature_cc; }

uint8_t sensors_take_new_temperature(void) {
    uint8_t n = new_temperature;
    new_temperature = 0;
    return n;
}

uint8_t sensors_button(void) { return button_state; }

uint8_t sensors_take_button_event(void) {
    uint8_t e = button_event;
    button_event = SENSORS_NO_EVENT;
    return e;
}
