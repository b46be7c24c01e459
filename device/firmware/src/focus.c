/* focus.c - focus stepper on STEP/DIR/EN, one step per Timer1 compare at VS_STEP_RATE_SPS.
 *
 * The compare interrupt issues the step pulses and stops the motion itself (target reached,
 * switch closed, homing budget spent), so the main loop only starts motions and reports
 * their end. Homing runs towards smaller positions until the switch closes and gives up
 * after VS_HOME_MAX_STEPS, so it cannot run forever on a broken switch.
 */
#include "focus.h"

#include <avr/interrupt.h>
#include <avr/io.h>
#include <util/atomic.h>
#include <util/delay.h>

#include "board.h"
#include "protocol.h"

/* Timer1 at clk/8 = 2 MHz. */
#define STEP_PERIOD_TICKS (2000000UL / VS_STEP_RATE_SPS)

static volatile int32_t position;
static volatile int32_t target;
static volatile uint8_t motion = VS_MOTION_IDLE;
static volatile uint8_t homed;
static volatile uint8_t done_reason = FOCUS_NO_EVENT;
static volatile uint16_t home_steps;

void focus_init(void) {
    PORTB = (uint8_t)((PORTB & ~(_BV(STEP_BIT) | _BV(DIR_BIT))) | _BV(ENABLE_BIT)); /* driver disabled */
    DDRB |= _BV(STEP_BIT) | _BV(DIR_BIT) | _BV(ENABLE_BIT);
    DDRD &= (uint8_t)~_BV(HOME_SW_BIT);
    PORTD |= _BV(HOME_SW_BIT); /* pull-up: the switch closes to ground */
    TCCR1A = 0;
    TCCR1B = _BV(WGM12); /* CTC on OCR1A, clock stopped */
    OCR1A = STEP_PERIOD_TICKS - 1;
    TIMSK1 = _BV(OCIE1A);
}

uint8_t focus_switch_closed(void) { return !(PIND & _BV(HOME_SW_BIT)); }

static void timer_start(void) {
    TCNT1 = 0;
    TCCR1B = _BV(WGM12) | _BV(CS11);
}

/* Called with interrupts off (ISR or atomic block). */
static void finish(uint8_t reason) {
    TCCR1B = _BV(WGM12);
    motion = VS_MOTION_IDLE;
    target = position;
    done_reason = reason;
}

static void pulse(void) {
    PORTB |= _BV(STEP_BIT);
    _delay_us(2); /* drivers need about 1 us of high time */
    PORTB &= (uint8_t)~_BV(STEP_BIT);
}

ISR(TIMER1_COMPA_vect) {
    if (motion == VS_MOTION_MOVING) {
        if (position == target) {
            finish(VS_MOVE_REACHED);
            return;
        }
        pulse();
        position += (PORTB & _BV(DIR_BIT)) ? 1 : -1;
        if (position == target) finish(VS_MOVE_REACHED);
    } else if (motion == VS_MOTION_HOMING) {
        if (focus_switch_closed()) {
            position = 0;
            homed = 1;
            finish(VS_MOVE_HOMED);
            return;
        }
        if (home_steps >= VS_HOME_MAX_STEPS) {
            finish(VS_MOVE_HOME_FAILED);
            return;
        }
        pulse();
        position--;
        home_steps++;
    } else {
        TCCR1B = _BV(WGM12);
    }
}

uint8_t focus_move(int32_t to) {
    if (to < VS_FOCUS_MIN_STEPS || to > VS_FOCUS_MAX_STEPS) return VS_STATUS_OUT_OF_RANGE;
    if (motion == VS_MOTION_HOMING) return VS_STATUS_BUSY;
    if (!homed) return VS_STATUS_NOT_HOMED;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        target = to;
        if (to == position) {
            if (motion == VS_MOTION_IDLE) done_reason = VS_MOVE_REACHED;
            else finish(VS_MOVE_REACHED);
        } else {
            /* DIR is set a full step period before the next pulse, well over the driver's setup time. */
            if (to > position) PORTB |= _BV(DIR_BIT);
            else PORTB &= (uint8_t)~_BV(DIR_BIT);
            PORTB &= (uint8_t)~_BV(ENABLE_BIT);
            if (motion == VS_MOTION_IDLE) {
                motion = VS_MOTION_MOVING;
                timer_start();
            }
        }
    }
    return VS_STATUS_OK;
}

uint8_t focus_home(void) {
    if (motion == VS_MOTION_HOMING) return VS_STATUS_BUSY;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        homed = 0;
        home_steps = 0;
        PORTB &= (uint8_t)~(_BV(DIR_BIT) | _BV(ENABLE_BIT));
        motion = VS_MOTION_HOMING;
        timer_start();
    }
    return VS_STATUS_OK;
}

void focus_stop(void) {
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        if (motion != VS_MOTION_IDLE) finish(VS_MOVE_STOPPED);
    }
}

int32_t focus_position(void) {
    int32_t p;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { p = position; }
    return p;
}

int32_t focus_target(void) {
    int32_t t;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { t = target; }
    return t;
}

uint8_t focus_motion(void) { return motion; }

uint8_t focus_homed(void) { return homed; }

uint8_t focus_take_done(void) {
    uint8_t r;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        r = done_reason;
        done_reason = FOCUS_NO_EVENT;
    }
    return r;
}
