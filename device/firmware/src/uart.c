/* uart.c - UART0 with a 128-byte receive ring and a 128-byte transmit ring.
 *
 * The transmit ring drains at line rate (11.5 bytes per ms), so a writer waits only when
 * the host is flooded with events; even then it gives up after UART_TX_WAIT_MS.
 */
#include "uart.h"

#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <stdlib.h>
#include <util/atomic.h>

#include "clock.h"

#define BAUD 115200
#define RING_SIZE 128 /* power of two */
#define UART_TX_WAIT_MS 20

static volatile uint8_t rx_ring[RING_SIZE];
static volatile uint8_t rx_head, rx_tail;
static volatile uint8_t tx_ring[RING_SIZE];
static volatile uint8_t tx_head, tx_tail;

volatile uint16_t uart_rx_overruns;
uint16_t uart_tx_drops;

ISR(USART_RX_vect) {
    uint8_t b = UDR0;
    uint8_t next = (rx_head + 1) & (RING_SIZE - 1);
    if (next == rx_tail) {
        uart_rx_overruns++;
        return;
    }
    rx_ring[rx_head] = b;
    rx_head = next;
}

ISR(USART_UDRE_vect) {
    if (tx_head == tx_tail) {
        UCSR0B &= ~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_ring[tx_tail];
    tx_tail = (tx_tail + 1) & (RING_SIZE - 1);
}

void uart_init(void) {
    /* Double speed: 16 MHz / 8 / (16 + 1) = 117647 baud, 2.1 % off 115200, as Optiboot uses. */
    UCSR0A = _BV(U2X0);
    UBRR0 = 16;
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
}

uint8_t uart_getc(uint8_t *b) {
    if (rx_head == rx_tail) return 0;
    *b = rx_ring[rx_tail];
    rx_tail = (rx_tail + 1) & (RING_SIZE - 1);
    return 1;
}

void uart_putc(uint8_t b) {
    uint8_t next = (tx_head + 1) & (RING_SIZE - 1);
    if (next == tx_tail) {
        uint32_t start = clock_ms();
        while (next == tx_tail) {
            if ((uint32_t)(clock_ms() - start) > UART_TX_WAIT_MS) {
                uart_tx_drops++;
                return;
            }
        }
    }
    tx_ring[tx_head] = b;
    tx_head = next;
    UCSR0B |= _BV(UDRIE0);
}

void uart_write(const uint8_t *data, uint8_t len) {
    while (len--) uart_putc(*data++);
}

void uart_puts_P(const char *s) {
    char c;
    while ((c = pgm_read_byte(s++)) != 0) uart_putc((uint8_t)c);
}

void uart_puts(const char *s) {
    while (*s) uart_putc((uint8_t)*s++);
}

void uart_put_i32(int32_t v) {
    char buf[12];
    ltoa(v, buf, 10);
    uart_puts(buf);
}

void uart_put_centi(int16_t v) {
    if (v < 0) {
        uart_putc('-');
        v = (int16_t)-v;
    }
    uart_put_i32(v / 100);
    uart_putc('.');
    uint8_t frac = (uint8_t)(v % 100);
    uart_putc((uint8_t)('0' + frac / 10));
    uart_putc((uint8_t)('0' + frac % 10));
}

void uart_flush(uint16_t max_ms) {
    uint32_t start = clock_ms();
    while (tx_head != tx_tail || !(UCSR0A & _BV(UDRE0))) {
        if ((uint32_t)(clock_ms() - start) > max_ms) return;
    }
}
