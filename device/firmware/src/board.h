/*
 * board.h - pin map and clock of the Veriscope controller board (ATmega328P, 16 MHz, Nano form factor).
 *
 *   D6  PD6 OC0A  white ring LED, PWM (Timer0)
 *   D5  PD5 OC0B  raking LED, PWM (Timer0)
 *   D3  PD3 OC2B  UV LED, PWM (Timer2)
 *   D9  PB1       focus stepper STEP (rising edge steps)
 *   D10 PB2       focus stepper DIR (high = towards larger positions)
 *   D8  PB0       focus stepper driver enable, active low
 *   D4  PD4       homing switch, active low, internal pull-up (closed at position 0)
 *   D2  PD2       trigger button, active low, internal pull-up
 *   A6  ADC6      temperature sensor, 500 mV at 0 degC + 10 mV/degC, AVcc (5 V) reference
 *
 * Timer0 also provides the 1.024 ms system tick (overflow interrupt); Timer1 times the steps.
 */
#ifndef BOARD_H
#define BOARD_H

#include <avr/io.h>

#define LED_WHITE_BIT PD6
#define LED_RAKING_BIT PD5
#define LED_UV_BIT PD3

#define STEP_BIT PB1
#define DIR_BIT PB2
#define ENABLE_BIT PB0

#define HOME_SW_BIT PD4
#define BUTTON_BIT PD2

#define TEMP_ADC_CHANNEL 6

#endif /* BOARD_H */
