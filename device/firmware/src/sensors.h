/* sensors.h - board temperature (ADC6) and the debounced trigger button. */
#ifndef SENSORS_H
#define SENSORS_H

#include <stdint.h>

#define SENSORS_NO_EVENT 0xFF

void sensors_init(void);

/* Call every main-loop pass: runs the ADC without waiting and debounces the button. */
void sensors_poll(uint32_t now_ms);

/* Latest temperature in hundredths of a degree Celsius. */
int16_t sensors_temperature_cc(void);

/* Whether a new temperature reading arrived since the last call. */
uint8_t sensors_take_new_temperature(void);

/* Debounced button state, 1 = held. */
uint8_t sensors_button(void);

/* 1 pressed / 0 released if the button changed since the last call, else SENSORS_NO_EVENT. */
uint8_t sensors_take_button_event(void);

#endif /* SENSORS_H */
