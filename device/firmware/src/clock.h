/* clock.h - millisecond time since boot, from the Timer0 overflow (shared with the white and raking PWM). */
#ifndef CLOCK_H
#define CLOCK_H

#include <stdint.h>

/* Start Timer0 in fast PWM at 976 Hz; its overflow interrupt keeps the time. */
void clock_init(void);

/* Milliseconds since clock_init; wraps after 49 days. */
uint32_t clock_ms(void);

#endif /* CLOCK_H */
