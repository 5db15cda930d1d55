/* MQTT publish load for the broker benchmark (bench_mqtt.py): N clients
 * on one thread (libmosquitto, poll over all sockets), each publishing
 * QoS 1 to its own topic with at most W messages in flight, for a fixed
 * time; counts the PUBACKs received after a warm-up and prints msgs/s.
 *
 *   mqtt_load HOST PORT CREDS DURATION_S WARMUP_S WINDOW [BROKER_PID]
 *
 * CREDS has one client per line: "client_id username password topic"
 * ("-" for no username/password). Prints one line:
 *   msgs_per_s=<float> acked=<n> clients=<n> seconds=<float>
 *   [broker_cpu_us_per_msg=<float>]
 * The last is the broker's user+system CPU time over the measured window
 * divided by the messages acknowledged: unlike msgs/s it barely moves
 * when other processes compete for the machine.
 * Exit status 1 if a client cannot connect or is disconnected. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

enum { CLIENTS_MAX = 4096, FIELD_MAX = 512 };

typedef struct {
    struct mosquitto *m;
    char id[FIELD_MAX], user[FIELD_MAX], pass[FIELD_MAX], topic[FIELD_MAX];
    int connected;
    int failed;
    int inflight;
    long acked;
} client;

static int measuring;

/* utime + stime of pid in clock ticks, from /proc/<pid>/stat; -1 if
 * unknown. */
static long long proc_cpu_ticks(long pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    size_t n;
    int field;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: count fields after its ')'. */
    if ((p = strrchr(buf, ')')) == NULL)
        return -1;
    for (field = 2; *p && field < 14; p++)
        if (*p == ' ')
            field++;
    if (sscanf(p, "%llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    client *c = arg;

    (void)m;
    if (rc == 0)
        c->connected = 1;
    else
        c->failed = 1;
}

static void on_disconnect(struct mosquitto *m, void *arg, int rc)
{
    client *c = arg;

    (void)m, (void)rc;
    c->connected = 0;
    c->failed = 1;
}

static void on_publish(struct mosquitto *m, void *arg, int mid)
{
    client *c = arg;

    (void)m, (void)mid;
    c->inflight--;
    if (measuring)
        c->acked++;
}

static int read_creds(const char *path, client **out, int *n)
{
    FILE *f = fopen(path, "r");
    char line[4 * FIELD_MAX];
    client *cs;
    int k = 0;

    if (f == NULL)
        return -1;
    cs = calloc(CLIENTS_MAX, sizeof(*cs));
    if (cs == NULL) {
        fclose(f);
        return -1;
    }
    while (k < CLIENTS_MAX && fgets(line, sizeof(line), f)) {
        client *c = &cs[k];

        if (sscanf(line, "%511s %511s %511s %511s", c->id, c->user, c->pass,
                   c->topic) == 4)
            k++;
    }
    fclose(f);
    *out = cs;
    *n = k;
    return 0;
}

/* One round of I/O over every client's socket, waiting at most ms. */
static void pump(client *cs, int n, struct pollfd *pfd, int ms)
{
    int i;

    for (i = 0; i < n; i++) {
        pfd[i].fd = mosquitto_socket(cs[i].m);
        pfd[i].events = POLLIN | (mosquitto_want_write(cs[i].m) ? POLLOUT : 0);
        pfd[i].revents = 0;
    }
    if (poll(pfd, (nfds_t)n, ms) < 0 && errno != EINTR)
        return;
    for (i = 0; i < n; i++) {
        if (pfd[i].fd < 0)
            continue;
        if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP))
            mosquitto_loop_read(cs[i].m, 1);
        if (pfd[i].revents & POLLOUT)
            mosquitto_loop_write(cs[i].m, 1);
    }
}

int main(int argc, char **argv)
{
    client *cs = NULL;
    struct pollfd *pfd;
    int n = 0, i, port, window, rc = 0;
    double duration, warmup, t0, t_measure = 0, t_end, last_misc = 0;
    long total = 0, broker_pid;
    long long cpu0 = -1, cpu1;
    char payload[64];

    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT CREDS DURATION_S WARMUP_S WINDOW [BROKER_PID]\n",
                argv[0]);
        return 2;
    }
    port = (int)strtol(argv[2], NULL, 10);
    duration = strtod(argv[4], NULL);
    warmup = strtod(argv[5], NULL);
    window = (int)strtol(argv[6], NULL, 10);
    broker_pid = argc == 8 ? strtol(argv[7], NULL, 10) : 0;
    if (read_creds(argv[3], &cs, &n) != 0 || n == 0 || window < 1) {
        fprintf(stderr, "mqtt_load: no clients in %s\n", argv[3]);
        return 2;
    }
    pfd = calloc((size_t)n, sizeof(*pfd));
    if (pfd == NULL)
        return 2;
    memset(payload, 'x', sizeof(payload));
    mosquitto_lib_init();
    for (i = 0; i < n; i++) {
        client *c = &cs[i];

        c->m = mosquitto_new(c->id, true, c);
        if (c->m == NULL)
            return 2;
        mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        /* The window is ours; libmosquitto must not queue on its own. */
        mosquitto_max_inflight_messages_set(c->m, (unsigned)window);
        if (strcmp(c->user, "-") != 0)
            mosquitto_username_pw_set(c->m, c->user,
                                      strcmp(c->pass, "-") ? c->pass : NULL);
        mosquitto_connect_callback_set(c->m, on_connect);
        mosquitto_disconnect_callback_set(c->m, on_disconnect);
        mosquitto_publish_callback_set(c->m, on_publish);
        if (mosquitto_connect(c->m, argv[1], port, 60) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "mqtt_load: cannot reach %s:%d\n", argv[1], port);
            return 1;
        }
    }
    /* Wait for every CONNACK. */
    t0 = now_s();
    for (;;) {
        int ok = 0, bad = 0;

        for (i = 0; i < n; i++) {
            ok += cs[i].connected;
            bad += cs[i].failed;
        }
        if (bad) {
            fprintf(stderr, "mqtt_load: %d client(s) refused at CONNECT\n", bad);
            return 1;
        }
        if (ok == n)
            break;
        if (now_s() - t0 > 30) {
            fprintf(stderr, "mqtt_load: only %d/%d clients connected\n", ok, n);
            return 1;
        }
        pump(cs, n, pfd, 50);
    }
    t0 = now_s();
    t_end = t0 + warmup + duration;
    while (now_s() < t_end) {
        double t = now_s();

        if (!measuring && t >= t0 + warmup) {
            measuring = 1;
            t_measure = t;
            cpu0 = proc_cpu_ticks(broker_pid);
        }
        for (i = 0; i < n; i++) {
            client *c = &cs[i];

            if (c->failed) {
                fprintf(stderr, "mqtt_load: client %s was disconnected\n", c->id);
                rc = 1;
                goto out;
            }
            while (c->inflight < window) {
                if (mosquitto_publish(c->m, NULL, c->topic, sizeof(payload),
                                      payload, 1, false) != MOSQ_ERR_SUCCESS)
                    break;
                c->inflight++;
            }
        }
        pump(cs, n, pfd, 10);
        if (t - last_misc > 1) {
            for (i = 0; i < n; i++)
                mosquitto_loop_misc(cs[i].m);
            last_misc = t;
        }
    }
    cpu1 = proc_cpu_ticks(broker_pid);
    for (i = 0; i < n; i++)
        total += cs[i].acked;
    printf("msgs_per_s=%.0f acked=%ld clients=%d seconds=%.2f",
           (double)total / (now_s() - t_measure), total, n, now_s() - t_measure);
    if (cpu0 >= 0 && cpu1 >= cpu0 && total > 0)
        printf(" broker_cpu_us_per_msg=%.3f",
               (double)(cpu1 - cpu0) * 1e6 / (double)sysconf(_SC_CLK_TCK) / (double)total);
    printf("\n");
out:
    for (i = 0; i < n; i++) {
        mosquitto_disconnect(cs[i].m);
        mosquitto_destroy(cs[i].m);
    }
    mosquitto_lib_cleanup();
    free(pfd);
    free(cs);
    return rc;
}
