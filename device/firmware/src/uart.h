/* uart.h - interrupt-driven UART0 at 115200 8N1 with receive and transmit rings; nothing here blocks unbounded. */
#ifndef UART_H
#define UART_H

#include <stdint.h>

void uart_init(void);

/* Next received byte in *b; 0 if none is waiting. */
uint8_t uart_getc(uint8_t *b);

/* Queue one byte. Waits at most UART_TX_WAIT_MS for room, then drops it (counted). */
void uart_putc(uint8_t b);

void uart_write(const uint8_t *data, uint8_t len);

/* Print a string from flash. */
void uart_puts_P(const char *s);

/* Print a string from RAM. */
void uart_puts(const char *s);

/* Print a signed decimal. */
void uart_put_i32(int32_t v);

/* Print hundredths as a decimal with two places, e.g. 2470 -> "24.70". */
void uart_put_centi(int16_t v);

/* Wait, at most max_ms, until everything queued has left the UART. */
void uart_flush(uint16_t max_ms);

/* Bytes lost to a full receive ring or a full transmit ring since boot. */
extern volatile uint16_t uart_rx_overruns;
extern uint16_t uart_tx_drops;

#endif /* UART_H */
