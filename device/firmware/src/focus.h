/* focus.h - the focus stepper: absolute moves within soft limits, homing on the switch, all timed by Timer1. */
#ifndef FOCUS_H
#define FOCUS_H

#include <stdint.h>

#define FOCUS_NO_EVENT 0xFF

void focus_init(void);

/* Start a move to target; returns a VS_STATUS_* (OK, OUT_OF_RANGE, NOT_HOMED, BUSY). */
uint8_t focus_move(int32_t target);

/* Start homing; returns VS_STATUS_OK or VS_STATUS_BUSY. */
uint8_t focus_home(void);

/* Stop at once; a MOVE_DONE with reason STOPPED follows if the motor was moving. */
void focus_stop(void);

int32_t focus_position(void);
int32_t focus_target(void);
uint8_t focus_motion(void); /* VS_MOTION_* */
uint8_t focus_homed(void);
uint8_t focus_switch_closed(void);

/* The VS_MOVE_* reason of a motion that ended since the last call, or FOCUS_NO_EVENT. */
uint8_t focus_take_done(void);

#endif /* FOCUS_H */
