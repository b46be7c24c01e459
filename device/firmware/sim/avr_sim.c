/*
 * veriscope-avr-sim - the controller board in software, for tests and for trying the firmware without hardware.
 *
 *   veriscope-avr-sim --bootloader HEX [--flash HEX] --pty-link PATH [--focus-start STEPS] [--temp-c DEGC]
 *
 * It runs an ATmega328P at 16 MHz under simavr, in real time, with the bootloader at 0x7E00
 * (BOOTRST programmed) and the application from --flash. UART0 is a pseudo-terminal whose
 * path is symlinked at PATH. Each time a program opens the terminal, the chip gets an
 * external reset with EXTRF in MCUSR, the way an Arduino resets on DTR, so the bootloader
 * listens before the application starts. Bytes reach the chip at the real line rate.
 *
 * Around the chip it models the board: the focus motor counts STEP pulses (direction from
 * DIR, only while EN is low) and closes the homing switch at position 0 and below; the
 * trigger button; a 10 mV/degC temperature sensor on ADC6.
 *
 * stdout carries one line per observation, "key=value" words after a keyword:
 *   ready pty=/dev/pts/N link=PATH
 *   reset t_us=T cause=por|ext|wdt        the chip reset (wdt: its watchdog fired)
 *   client t_us=T open|close count=N      a program opened or closed the terminal
 *   led t_us=T white=D raking=D uv=D      PWM duty on each LED pin changed (percent, 0.1 steps)
 *   steps t_us=T pos=P count=C             the motor stopped after stepping (no pulse for 5 ms)
 *   state t_us=T ...                       the whole picture, in answer to "query"
 * stdin takes commands, one per line:
 *   query | button press | button release | temp DEGC | reset | unplug MS | quit
 * simavr's own messages go to stderr.
 *
 * The LED duty is what the PWM unit drives on each pin, read from the timer's output mode
 * and compare register (or the port bit when the compare output is disconnected), sampled
 * every millisecond of chip time. Step pulses are counted edge by edge on the STEP pin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_adc.h"
#include "avr_extint.h"
#include "avr_ioport.h"
#include "avr_uart.h"
#include "avr_watchdog.h"
#include "sim_avr.h"
#include "sim_io.h"
#include "sim_irq.h"

#define FREQ_HZ 16000000UL
#define BOOT_PC 0x7E00
#define FLASH_SIZE 0x8000
#define SLICE_CYCLES 1600          /* 100 us of chip time between I/O services */
#define LINE_CYCLES (FREQ_HZ / 11520) /* one byte at 115200 8N1 */
#define STEP_IDLE_CYCLES (FREQ_HZ / 200) /* 5 ms without a pulse ends a burst */

/* ATmega328P data-space addresses. */
#define A_PIND 0x29
#define A_DDRD 0x2A
#define A_PORTD 0x2B
#define A_PORTB 0x25
#define A_TCCR0A 0x44
#define A_OCR0A 0x47
#define A_OCR0B 0x48
#define A_MCUSR 0x54
#define A_TCCR2A 0xB0
#define A_OCR2B 0xB4
#define A_WDTCSR 0x60
#define WDT_PRESCALER_BITS 0x27
#define WDT_ENABLE_BITS 0x48 /* WDIE | WDE */
#define MCUSR_PORF 0x01
#define MCUSR_EXTRF 0x02

static avr_t *avr;
static FILE *out;
static uint64_t total_cycles; /* chip time since start, across resets */
static uint64_t last_cycle_seen;

static int master_fd = -1, slave_fd = -1, inotify_fd = -1;
static char slave_name[128];
static const char *link_path;
static int clients;
static int powered = 1;
static uint64_t power_on_at;

static uint8_t host_buf[4096];
static size_t host_len, host_pos;
static uint64_t next_feed;
static uint8_t chip_buf[1 << 16];
static size_t chip_len;
static int xon = 1;

static const char *pending_reset; /* set by us just before avr_reset, so the reset hook can tell ours from the watchdog's */
static int resets;

static int32_t focus_pos = 400; /* where the motor sits at power-up, steps above the switch */
static int32_t burst_start_pos;
static uint64_t step_count, last_step_cycle;
static int stepping;
static int button_down;
static double temp_c = 25.0;
static int duty_tenths[3] = {-1, -1, -1};
static uint8_t last_wdtcsr;

static avr_irq_t *uart_in_irq;
static avr_irq_t *home_irq, *button_irq, *adc_irq;

static uint64_t t_us(void) { return total_cycles / (FREQ_HZ / 1000000UL); }

static void emit(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    fflush(out);
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("veriscope-avr-sim: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---- Intel HEX ------------------------------------------------------------------- */

static int hexval(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Load an Intel HEX file into flash (records 00, 01, 02, 04; 03 and 05 ignored). Returns bytes loaded.
 * Data at or above `size` is an error, unless it lies past the end of flash, where it is dropped
 * with a note: Debian's Optiboot build is 532 bytes and spills 20 bytes (its appStart) past 0x7FFF.
 * The chip cannot hold them; its program counter wraps, so a call there lands at 0x0004, the
 * application's second vector, which an avr-gcc application turns into a jump to its start. */
static size_t load_hex(const char *path, uint8_t *flash, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    char line[600];
    uint32_t base = 0;
    size_t loaded = 0;
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '\r' || *s == '\n' || !*s) continue;
        if (*s != ':') die("%s:%d: not an Intel HEX record", path, lineno);
        int count = hexval(s + 1, 2), addr = hexval(s + 3, 4), type = hexval(s + 7, 2);
        if (count < 0 || addr < 0 || type < 0) die("%s:%d: malformed record", path, lineno);
        uint8_t sum = (uint8_t)(count + (addr >> 8) + addr + type);
        uint8_t data[256];
        for (int i = 0; i <= count; i++) {
            int b = hexval(s + 9 + 2 * i, 2);
            if (b < 0) die("%s:%d: malformed record", path, lineno);
            if (i < count) data[i] = (uint8_t)b;
            sum = (uint8_t)(sum + b);
        }
        if (sum) die("%s:%d: bad checksum", path, lineno);
        if (type == 0) {
            uint32_t at = base + (uint32_t)addr;
            uint32_t fit = at >= FLASH_SIZE ? 0 : at + (uint32_t)count > FLASH_SIZE ? FLASH_SIZE - at : (uint32_t)count;
            if (fit < (uint32_t)count && size == FLASH_SIZE) {
                fprintf(stderr, "veriscope-avr-sim: %s:%d: %u bytes past the end of flash dropped\n", path, lineno,
                        (unsigned)(count - (int)fit));
            } else if (at + (uint32_t)count > size) {
                die("%s:%d: data at 0x%05X does not fit below 0x%05zX", path, lineno, at, size);
            }
            memcpy(flash + at, data, fit);
            loaded += fit;
        } else if (type == 1) {
            break;
        } else if (type == 2) {
            base = (uint32_t)((data[0] << 8 | data[1]) << 4);
        } else if (type == 4) {
            base = (uint32_t)((data[0] << 8 | data[1]) << 16);
        }
    }
    fclose(f);
    return loaded;
}

/* ---- chip resets ----------------------------------------------------------------- */

/* Drive an input pin from outside. A reset clears PIN while simavr's pin IRQ keeps its old level
 * (and ignores a raise to the same level), so force the IRQ whenever the pin reads wrong. */
static void drive_pin(avr_irq_t *irq, uint8_t bit, uint32_t level) {
    if (((avr->data[A_PIND] >> bit) & 1) != level) irq->value = !level;
    avr_raise_irq(irq, level);
}

static void drive_inputs(void) {
    drive_pin(home_irq, 4, focus_pos <= 0 ? 0 : 1);
    drive_pin(button_irq, 2, button_down ? 0 : 1);
    avr_raise_irq(adc_irq, (uint32_t)(500.0 + 10.0 * temp_c + 0.5));
}

/* Runs inside avr_reset, for every reset: ours, and the watchdog's. */
static void on_reset(struct avr_io_t *io) {
    (void)io;
    const char *cause = pending_reset ? pending_reset : "wdt";
    pending_reset = NULL;
    resets++;
    /* simavr polls INT0/INT1 every cycle while their pins are low, for level-triggered interrupts.
     * The firmware enables neither, and PD3 (INT1) is the UV LED, low whenever it is off: turn the
     * polling off, or the simulation runs at a fraction of real time. Every reset turns it back on. */
    avr_extint_set_strict_lvl_trig(avr, 0, 0);
    avr_extint_set_strict_lvl_trig(avr, 1, 0);
    xon = 1;
    emit("reset t_us=%llu cause=%s", (unsigned long long)t_us(), cause);
}

static avr_io_t reset_hook = {.kind = "veriscope-reset", .reset = on_reset};

static void chip_reset(const char *cause, uint8_t mcusr) {
    /* A watchdog reset that simavr has scheduled but not yet run would otherwise be folded
     * into this one, leaving the watchdog armed at 16 ms: let it happen first. */
    if (avr->run != avr_callback_run_raw) avr_run(avr);
    pending_reset = cause;
    avr_reset(avr);
    avr->data[A_MCUSR] = mcusr;
    drive_inputs();
}

/* simavr keeps counting the old watchdog period after the prescaler changes, until the next WDR.
 * The bootloader relies on a change taking effect at once (it shortens the timeout to 16 ms to
 * leave, then spins), so restart the watchdog with the new period whenever the prescaler changes. */
static void fix_watchdog(void) {
    uint8_t w = avr->data[A_WDTCSR];
    if (((w ^ last_wdtcsr) & WDT_PRESCALER_BITS) && (w & WDT_ENABLE_BITS))
        avr_ioctl(avr, AVR_IOCTL_WATCHDOG_RESET, 0);
    last_wdtcsr = w;
}

/* ---- pins ------------------------------------------------------------------------ */

static void on_step(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)param;
    if (!value || irq->value) return; /* rising edges only */
    uint8_t portb = avr->data[A_PORTB];
    if (portb & 0x01) return; /* EN high: driver disabled, the motor does not move */
    if (!stepping) {
        stepping = 1;
        burst_start_pos = focus_pos;
    }
    focus_pos += (portb & 0x04) ? 1 : -1;
    step_count++;
    last_step_cycle = avr->cycle;
    drive_pin(home_irq, 4, focus_pos <= 0 ? 0 : 1);
}

static int pwm_duty_tenths(uint8_t tccra, uint8_t com_shift, uint8_t ocr, uint8_t pin_bit) {
    uint8_t com = (tccra >> com_shift) & 3;
    uint8_t fast_pwm = (tccra & 3) == 3;
    if (!(avr->data[A_DDRD] & (1u << pin_bit))) return 0;
    if (com == 2 && fast_pwm) return (int)(((ocr + 1) * 1000 + 128) / 256);
    if (com == 3 && fast_pwm) return (int)(((255 - ocr) * 1000 + 128) / 256);
    return (avr->data[A_PORTD] & (1u << pin_bit)) ? 1000 : 0;
}

static void sample_pins(void) {
    drive_inputs(); /* the firmware's own port writes can overwrite what the pins read */
    int d[3];
    d[0] = pwm_duty_tenths(avr->data[A_TCCR0A], 6, avr->data[A_OCR0A], 6);
    d[1] = pwm_duty_tenths(avr->data[A_TCCR0A], 4, avr->data[A_OCR0B], 5);
    d[2] = pwm_duty_tenths(avr->data[A_TCCR2A], 4, avr->data[A_OCR2B], 3);
    if (!powered) d[0] = d[1] = d[2] = 0;
    if (memcmp(d, duty_tenths, sizeof d)) {
        memcpy(duty_tenths, d, sizeof d);
        emit("led t_us=%llu white=%d.%d raking=%d.%d uv=%d.%d", (unsigned long long)t_us(), d[0] / 10, d[0] % 10,
             d[1] / 10, d[1] % 10, d[2] / 10, d[2] % 10);
    }
    if (stepping && avr->cycle - last_step_cycle > STEP_IDLE_CYCLES) {
        stepping = 0;
        emit("steps t_us=%llu pos=%d count=%llu moved=%d", (unsigned long long)t_us(), focus_pos,
             (unsigned long long)step_count, focus_pos - burst_start_pos);
    }
}

/* ---- the terminal ---------------------------------------------------------------- */

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    if (clients > 0 && chip_len < sizeof chip_buf) chip_buf[chip_len++] = (uint8_t)value;
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    (void)value;
    xon = 1;
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    if (value) xon = 0;
}

static void open_terminal(void) {
    if (openpty(&master_fd, &slave_fd, slave_name, NULL, NULL) < 0) die("openpty: %s", strerror(errno));
    struct termios tio;
    tcgetattr(slave_fd, &tio);
    cfmakeraw(&tio);
    cfsetspeed(&tio, B115200);
    tcsetattr(slave_fd, TCSANOW, &tio);
    fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);
    /* The slave end stays open here, so the terminal outlives every client. */
    inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd < 0 || inotify_add_watch(inotify_fd, slave_name, IN_OPEN | IN_CLOSE) < 0)
        die("inotify on %s: %s", slave_name, strerror(errno));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", link_path, (int)getpid());
    unlink(tmp);
    if (symlink(slave_name, tmp) < 0 || rename(tmp, link_path) < 0)
        die("cannot link %s to %s: %s", link_path, slave_name, strerror(errno));
    clients = 0;
    host_len = host_pos = 0;
    chip_len = 0;
}

static void close_terminal(void) {
    if (inotify_fd >= 0) close(inotify_fd);
    if (slave_fd >= 0) close(slave_fd);
    if (master_fd >= 0) close(master_fd);
    inotify_fd = slave_fd = master_fd = -1;
    clients = 0;
}

static void service_terminal(void) {
    char evbuf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while ((n = read(inotify_fd, evbuf, sizeof evbuf)) > 0) {
        for (char *p = evbuf; p < evbuf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->mask & IN_OPEN) {
                clients++;
                emit("client t_us=%llu open count=%d", (unsigned long long)t_us(), clients);
                /* DTR: every open resets the chip into its bootloader. What the client has
                 * written so far arrived during the reset pulse, and is lost, as on a board. */
                if (powered) chip_reset("ext", MCUSR_EXTRF);
                uint8_t junk[512];
                while (read(master_fd, junk, sizeof junk) > 0) {
                }
                host_len = host_pos = 0;
            } else if (ev->mask & IN_CLOSE) {
                if (clients > 0) clients--;
                emit("client t_us=%llu close count=%d", (unsigned long long)t_us(), clients);
                if (clients == 0) {
                    /* Nobody listens: what the chip sends now is lost, as on a real adapter. */
                    chip_len = 0;
                    host_len = host_pos = 0;
                    tcflush(slave_fd, TCIFLUSH);
                }
            }
            p += sizeof(struct inotify_event) + ev->len;
        }
    }
    if (chip_len) {
        ssize_t w = write(master_fd, chip_buf, chip_len);
        if (w > 0) {
            memmove(chip_buf, chip_buf + w, chip_len - (size_t)w);
            chip_len -= (size_t)w;
        }
    }
    if (host_pos == host_len) {
        ssize_t r = read(master_fd, host_buf, sizeof host_buf);
        host_pos = 0;
        host_len = r > 0 ? (size_t)r : 0;
        if (host_len && next_feed < avr->cycle) next_feed = avr->cycle;
    }
}

/* Hand the chip the next host byte when the line would have delivered it. */
static void feed_uart(void) {
    while (host_pos < host_len && xon && avr->cycle >= next_feed) {
        avr_raise_irq(uart_in_irq, host_buf[host_pos++]);
        next_feed += LINE_CYCLES;
    }
}

/* ---- control --------------------------------------------------------------------- */

static void power_down(uint32_t ms) {
    emit("unplug t_us=%llu ms=%u", (unsigned long long)t_us(), ms);
    close_terminal();
    powered = 0;
    power_on_at = total_cycles + (uint64_t)ms * (FREQ_HZ / 1000);
}

static void power_up(void) {
    powered = 1;
    open_terminal();
    chip_reset("por", MCUSR_PORF);
    emit("ready pty=%s link=%s", slave_name, link_path);
}

static void command(char *line) {
    char *nl = strpbrk(line, "\r\n");
    if (nl) *nl = 0;
    if (!strcmp(line, "query")) {
        emit("state t_us=%llu white=%d.%d raking=%d.%d uv=%d.%d pos=%d steps=%llu home=%d button=%d temp_c=%.2f resets=%d "
             "clients=%d powered=%d pc=0x%04x wdtcsr=0x%02x",
             (unsigned long long)t_us(), duty_tenths[0] / 10, duty_tenths[0] % 10, duty_tenths[1] / 10,
             duty_tenths[1] % 10, duty_tenths[2] / 10, duty_tenths[2] % 10, focus_pos, (unsigned long long)step_count,
             focus_pos <= 0, button_down, temp_c, resets, clients, powered, avr->pc, avr->data[0x60]);
    } else if (!strcmp(line, "button press") || !strcmp(line, "button release")) {
        button_down = line[7] == 'p';
        if (powered) drive_pin(button_irq, 2, button_down ? 0 : 1);
        emit("button t_us=%llu down=%d", (unsigned long long)t_us(), button_down);
    } else if (!strncmp(line, "temp ", 5)) {
        temp_c = atof(line + 5);
        if (powered) avr_raise_irq(adc_irq, (uint32_t)(500.0 + 10.0 * temp_c + 0.5));
        emit("temp t_us=%llu temp_c=%.2f", (unsigned long long)t_us(), temp_c);
    } else if (!strcmp(line, "reset")) {
        if (powered) chip_reset("ext", MCUSR_EXTRF);
    } else if (!strncmp(line, "unplug ", 7)) {
        if (powered) power_down((uint32_t)atoi(line + 7));
    } else if (!strcmp(line, "quit")) {
        exit(0);
    } else if (*line) {
        emit("error unknown command: %s", line);
    }
}

static void service_stdin(void) {
    static char buf[512];
    static size_t len;
    struct pollfd p = {.fd = 0, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) return;
    ssize_t r = read(0, buf + len, sizeof buf - 1 - len);
    if (r <= 0) exit(0); /* the controlling test went away */
    len += (size_t)r;
    buf[len] = 0;
    char *start = buf, *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = 0;
        command(start);
        start = nl + 1;
    }
    len = strlen(start);
    memmove(buf, start, len + 1);
    if (len == sizeof buf - 1) len = 0;
}

/* ---- main ------------------------------------------------------------------------ */

static uint64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

static void on_exit_unlink(void) {
    if (link_path) unlink(link_path);
}

static void on_signal(int sig) {
    (void)sig;
    exit(0);
}

int main(int argc, char **argv) {
    const char *bootloader = NULL, *app = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bootloader") && i + 1 < argc) bootloader = argv[++i];
        else if (!strcmp(argv[i], "--flash") && i + 1 < argc) app = argv[++i];
        else if (!strcmp(argv[i], "--pty-link") && i + 1 < argc) link_path = argv[++i];
        else if (!strcmp(argv[i], "--focus-start") && i + 1 < argc) focus_pos = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--temp-c") && i + 1 < argc) temp_c = atof(argv[++i]);
        else die("usage: veriscope-avr-sim --bootloader HEX [--flash HEX] --pty-link PATH [--focus-start STEPS] [--temp-c DEGC]");
    }
    if (!bootloader || !link_path) die("--bootloader and --pty-link are required");

    /* Observations own stdout; simavr prints its chatter to stdout too, so send that to stderr. */
    int obs_fd = dup(1);
    dup2(2, 1);
    out = fdopen(obs_fd, "w");
    atexit(on_exit_unlink);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) die("simavr does not know the atmega328p");
    avr_init(avr);
    avr->frequency = FREQ_HZ;
    avr->vcc = avr->avcc = avr->aref = 5000;
    avr->log = LOG_WARNING;
    uint8_t *flash = avr->flash;
    memset(flash, 0xFF, FLASH_SIZE);
    load_hex(bootloader, flash, FLASH_SIZE);
    if (app) {
        size_t n = load_hex(app, flash, BOOT_PC);
        fprintf(stderr, "veriscope-avr-sim: %zu application bytes from %s\n", n, app);
    }
    avr->reset_pc = BOOT_PC;

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_POLL_SLEEP | AVR_UART_FLAG_STDIO);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uart_in_irq = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 1), on_step, NULL);
    home_irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 4);
    button_irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
    adc_irq = avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC6);
    avr_register_io(avr, &reset_hook);

    open_terminal();
    chip_reset("por", MCUSR_PORF); /* power-on: the bootloader starts the application at once */
    emit("ready pty=%s link=%s", slave_name, link_path);

    uint64_t wall0 = wall_us(), chip0 = 0, next_ms = 0;
    last_cycle_seen = avr->cycle;
    for (;;) {
        if (powered) {
            uint64_t until = avr->cycle + SLICE_CYCLES;
            while (avr->cycle < until) {
                int state = avr_run(avr);
                if (state == cpu_Done || state == cpu_Crashed) {
                    emit("crash t_us=%llu pc=0x%04x state=%d", (unsigned long long)t_us(), avr->pc, state);
                    chip_reset("ext", MCUSR_EXTRF);
                    break;
                }
                feed_uart();
            }
            fix_watchdog();
            uint64_t now = avr->cycle;
            total_cycles += now >= last_cycle_seen ? now - last_cycle_seen : now;
            last_cycle_seen = now;
        } else {
            total_cycles += SLICE_CYCLES;
            if (total_cycles >= power_on_at) power_up();
        }
        if (master_fd >= 0) service_terminal();
        if (total_cycles >= next_ms) {
            next_ms = total_cycles + FREQ_HZ / 1000;
            if (powered) sample_pins();
            service_stdin();
        }
        /* Real time: sleep while the chip is ahead of the wall clock; never try to catch up more than 50 ms. */
        uint64_t chip_us = (total_cycles - chip0) / (FREQ_HZ / 1000000UL);
        uint64_t now_us = wall_us() - wall0;
        if (chip_us > now_us + 1000) {
            struct timespec ts = {0, (long)(chip_us - now_us) * 1000L};
            nanosleep(&ts, NULL);
        } else if (now_us > chip_us + 50000) {
            wall0 += now_us - chip_us - 50000;
        }
    }
}
