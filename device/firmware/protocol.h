/*
 * protocol.h - the Veriscope controller serial protocol, version 1.
 *
 * The single source of every constant on the wire. PROTOCOL.md beside this
 * file explains the frames byte by byte; the Python codec
 * (veriscope.device.controller._protocol) mirrors these numbers and a test
 * keeps the two in step.
 *
 * Wire: UART 115200 8N1. Multi-byte integers are little-endian.
 *
 *   offset  size  field
 *   0       1     VS_SOF
 *   1       1     LEN   payload length N, 0..VS_PAYLOAD_MAX
 *   2       1     SEQ   request sequence number, echoed in the response
 *   3       1     OP    opcode
 *   4       N     payload
 *   4+N     2     CRC-16/CCITT-FALSE of bytes 1..3+N (poly 0x1021, init 0xFFFF)
 */
#ifndef VERISCOPE_PROTOCOL_H
#define VERISCOPE_PROTOCOL_H

/* Protocol version reported by HELLO. Bumped on any incompatible change. */
#define VS_PROTOCOL_VERSION 1

/* Framing. */
#define VS_SOF 0xA5             /* start of frame; never a printable byte, so text lines cannot start a frame */
#define VS_PAYLOAD_MAX 48       /* largest payload in bytes */
#define VS_FRAME_OVERHEAD 6     /* SOF, LEN, SEQ, OP and two CRC bytes */
#define VS_FRAME_TIMEOUT_MS 50  /* a partial frame is dropped after this long without a byte */

/* Opcode ranges. */
#define VS_OP_RESPONSE_BIT 0x80 /* a response carries its request's opcode with this bit set */

/* Requests, host to board: 0x01..0x2F commands, 0x30..0x3F maintenance. */
#define VS_OP_HELLO 0x01            /* u8 host protocol version -> HELLO reply (layout frozen across versions) */
#define VS_OP_PING 0x02             /* any bytes -> the same bytes */
#define VS_OP_GET_STATUS 0x03       /* -> status block */
#define VS_OP_GET_CONFIG 0x04       /* -> limits and timeouts */
#define VS_OP_SET_HOST_TIMEOUT 0x05 /* u16 host-silence timeout in ms, VS_HOST_TIMEOUT_MIN_MS..MAX */
#define VS_OP_SET_LEDS 0x10         /* u8 channel mask, u8 duty % per channel (white, raking, uv) -> 3 x u8 duty % */
#define VS_OP_MOVE_FOCUS 0x20       /* i32 target steps; MOVE_DONE follows when the motor stops */
#define VS_OP_HOME_FOCUS 0x21       /* seek the homing switch; MOVE_DONE (HOMED or HOME_FAILED) follows */
#define VS_OP_STOP_FOCUS 0x22       /* stop the motor; MOVE_DONE (STOPPED) follows if it was moving */
#define VS_OP_RESET 0x30            /* "RST!" -> reply, then a watchdog reset */
#define VS_OP_DEBUG_HANG 0x31       /* "HANG" -> reply, then the main loop stops feeding the watchdog */

/* Events, board to host, unsolicited. SEQ carries the board's own event counter. */
#define VS_EV_BOOT 0x40        /* u8 protocol, u8 major, u8 minor, u8 patch, u8 reset cause */
#define VS_EV_BUTTON 0x41      /* u8 1 = pressed, 0 = released */
#define VS_EV_MOVE_DONE 0x42   /* i32 position steps, u8 reason (VS_MOVE_*) */
#define VS_EV_OVER_TEMP 0x43   /* u8 1 = tripped (LEDs forced off), 0 = cleared; i16 temperature centi-degC */
#define VS_EV_HOST_SILENT 0x44 /* u16 timeout ms: the host went silent and the LEDs were switched off */
/* 0x45..0x7F are reserved for future events and requests. */

/* Status, the first payload byte of every response. */
#define VS_STATUS_OK 0
#define VS_STATUS_UNKNOWN_OP 1   /* opcode not known to this firmware */
#define VS_STATUS_BAD_LENGTH 2   /* payload length wrong for the opcode */
#define VS_STATUS_BAD_ARGUMENT 3 /* a field is out of its documented range */
#define VS_STATUS_OUT_OF_RANGE 4 /* focus target outside the soft limits */
#define VS_STATUS_NOT_HOMED 5    /* focus move refused before homing */
#define VS_STATUS_BUSY 6         /* focus move refused while homing */
#define VS_STATUS_OVER_TEMP 7    /* LEDs refused while over temperature */

/* MOVE_DONE reasons. */
#define VS_MOVE_REACHED 0     /* target reached */
#define VS_MOVE_HOMED 1       /* homing switch found; position is now 0 */
#define VS_MOVE_STOPPED 2     /* stopped by STOP_FOCUS */
#define VS_MOVE_HOME_FAILED 3 /* homing switch not found within VS_HOME_MAX_STEPS */

/* Reset causes, in BOOT and GET_STATUS. The bootloader clears MCUSR, so the firmware
 * can tell only the resets it caused itself. */
#define VS_RESET_POWER_OR_EXTERNAL 0 /* power-on, reset pin or port open (DTR) */
#define VS_RESET_WATCHDOG 1          /* the watchdog fired: the firmware wedged */
#define VS_RESET_SOFTWARE 2          /* RESET request */

/* Channel mask bits of SET_LEDS, and the order of duty bytes everywhere. */
#define VS_LED_WHITE 0x01  /* white ring */
#define VS_LED_RAKING 0x02 /* raking light */
#define VS_LED_UV 0x04     /* 365 nm UV */
#define VS_LED_COUNT 3

/* GET_STATUS flags. */
#define VS_FLAG_HOMED 0x01       /* focus position is referenced to the switch */
#define VS_FLAG_OVER_TEMP 0x02   /* over temperature: LEDs are held off */
#define VS_FLAG_HOST_SILENT 0x04 /* LEDs were switched off by the host-silence timeout */
#define VS_FLAG_BUTTON 0x08      /* trigger button held down */
#define VS_FLAG_HOME_SWITCH 0x10 /* homing switch closed */

/* GET_STATUS motion states. */
#define VS_MOTION_IDLE 0
#define VS_MOTION_MOVING 1
#define VS_MOTION_HOMING 2

/* Capability bits of HELLO. */
#define VS_CAP_LEDS 0x0001    /* three PWM LED channels */
#define VS_CAP_FOCUS 0x0002   /* focus stepper with homing switch */
#define VS_CAP_TEMP 0x0004    /* board temperature */
#define VS_CAP_BUTTON 0x0008  /* trigger button events */
#define VS_CAP_CONSOLE 0x0010 /* human-typable text console */

/* Board kinds of HELLO. */
#define VS_BOARD_ATMEGA328P 1 /* the controller board */
#define VS_BOARD_EMULATED 127 /* the pure-Python emulation */

/* Limits and defaults. */
#define VS_FOCUS_MIN_STEPS 0
#define VS_FOCUS_MAX_STEPS 12000
#define VS_HOME_MAX_STEPS 13000        /* homing gives up after this many steps without the switch */
#define VS_STEP_RATE_SPS 4000          /* focus motor speed, steps per second */
#define VS_HOST_TIMEOUT_DEFAULT_MS 5000
#define VS_HOST_TIMEOUT_MIN_MS 100
#define VS_HOST_TIMEOUT_MAX_MS 60000
#define VS_OVER_TEMP_CC 7000  /* LEDs forced off at or above 70.00 degC */
#define VS_OVER_TEMP_CLEAR_CC 6500 /* and allowed again below 65.00 degC */

/* Magic payloads of the maintenance requests, so stray bytes cannot trigger them. */
#define VS_RESET_MAGIC "RST!"
#define VS_HANG_MAGIC "HANG"

#endif /* VERISCOPE_PROTOCOL_H */
