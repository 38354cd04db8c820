/*
 * What libzmq itself allows on this machine, for BENCHMARKS.md: the least a
 * broker can do (a relay in C that forwards frames between a client ROUTER and
 * a worker ROUTER, round-robin, checking nothing), the raw DEALER-ROUTER echo
 * it is compared with, and the cost of waking a thread. Not part of Chorus;
 * scripts/bench-bus.py builds and runs it beside the broker.
 *
 *   bus-floor relay FRONTEND BACKEND          forward client requests to workers and back
 *   bus-floor worker BACKEND                  an echo worker for the relay
 *   bus-floor client ENDPOINT [N W BYTES]     round trips through the relay
 *   bus-floor raw [N W BYTES]                 DEALER to an echoing ROUTER in one process (tcp loopback)
 *   bus-floor wakeup [N]                      eventfd ping-pong between two threads
 *
 * client and raw measure like `chorus bench-bus`: 200 warm-up round trips, N
 * one at a time (p50, p99), then N with W in flight; they print one JSON line.
 *
 * build: cc -O2 -o bus-floor scripts/bus-floor.c -lzmq -lpthread
 */
#include <zmq.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void check(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "bus-floor: %s: %s\n", what, zmq_strerror(zmq_errno()));
        exit(1);
    }
}

/* Moves the rest of a multipart message from one socket to another. */
static void forward_rest(void *from, void *to) {
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        check(zmq_msg_recv(&part, from, 0), "receive");
        more = zmq_msg_more(&part);
        check(zmq_msg_send(&part, to, more ? ZMQ_SNDMORE : 0), "send");
    }
}

static void relay(void *ctx, const char *frontend, const char *backend) {
    void *fe = zmq_socket(ctx, ZMQ_ROUTER), *be = zmq_socket(ctx, ZMQ_ROUTER);
    check(zmq_bind(fe, frontend), "bind frontend");
    check(zmq_bind(be, backend), "bind backend");
    enum { MAX_WORKERS = 64 };
    char ids[MAX_WORKERS][256];
    size_t lengths[MAX_WORKERS];
    int workers = 0, next = 0;
    /* clients are heard once a worker has registered */
    zmq_pollitem_t items[2] = {{be, 0, ZMQ_POLLIN, 0}, {fe, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        check(zmq_poll(items, workers ? 2 : 1, -1), "poll");
        /* workers: an empty frame registers; anything else is [client id, reply...] */
        for (;;) {
            zmq_msg_t id, first;
            zmq_msg_init(&id);
            if (zmq_msg_recv(&id, be, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&id); break; }
            zmq_msg_init(&first);
            check(zmq_msg_recv(&first, be, 0), "receive");
            if (zmq_msg_size(&first) == 0) {
                if (workers < MAX_WORKERS && zmq_msg_size(&id) <= 256) {
                    memcpy(ids[workers], zmq_msg_data(&id), zmq_msg_size(&id));
                    lengths[workers++] = zmq_msg_size(&id);
                }
                zmq_msg_close(&first);
            } else {
                int more = zmq_msg_more(&first);
                check(zmq_msg_send(&first, fe, more ? ZMQ_SNDMORE : 0), "send");
                if (more) forward_rest(be, fe);
            }
            zmq_msg_close(&id);
        }
        /* clients: [client id, request...] goes to the next worker as [worker id, client id, request...] */
        while (workers) {
            zmq_msg_t id;
            zmq_msg_init(&id);
            if (zmq_msg_recv(&id, fe, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&id); break; }
            int w = next++ % workers;
            check(zmq_send(be, ids[w], lengths[w], ZMQ_SNDMORE), "send");
            check(zmq_msg_send(&id, be, ZMQ_SNDMORE), "send");
            forward_rest(fe, be);
        }
    }
}

static void echo_loop(void *socket) {
    for (;;) {
        int more = 1;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, socket, 0) < 0) return;
            more = zmq_msg_more(&part);
            if (zmq_msg_send(&part, socket, more ? ZMQ_SNDMORE : 0) < 0) return;
        }
    }
}

static void *echo_thread(void *socket) {
    echo_loop(socket);
    return NULL;
}

static void worker(void *ctx, const char *backend) {
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    check(zmq_connect(s, backend), "connect");
    check(zmq_send(s, "", 0, 0), "send");
    echo_loop(s);
}

static void send_request(void *s, int tag, const char *payload, int bytes) {
    check(zmq_send(s, &tag, sizeof tag, ZMQ_SNDMORE), "send");
    check(zmq_send(s, payload, bytes, 0), "send");
}

static int receive_reply(void *s) {
    int tag = -1, more = 1;
    char buffer[65536];
    check(zmq_recv(s, &tag, sizeof tag, 0), "receive");
    size_t size = sizeof more;
    while (zmq_getsockopt(s, ZMQ_RCVMORE, &more, &size) == 0 && more) check(zmq_recv(s, buffer, sizeof buffer, 0), "receive");
    return tag;
}

static void client(void *ctx, const char *endpoint, const char *mode, int n, int window, int bytes) {
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    check(zmq_connect(s, endpoint), "connect");
    char *payload = malloc(bytes);
    memset(payload, 'x', bytes);
    double *samples = malloc(n * sizeof *samples);
    for (int i = 0; i < 200; i++) { send_request(s, i, payload, bytes); receive_reply(s); }
    for (int i = 0; i < n; i++) {
        double t = now_us();
        send_request(s, i, payload, bytes);
        if (receive_reply(s) != i) { fprintf(stderr, "bus-floor: reply out of order\n"); exit(1); }
        samples[i] = now_us() - t;
    }
    qsort(samples, n, sizeof *samples, compare);
    int sent = 0, received = 0;
    double start = now_us();
    while (sent < window && sent < n) send_request(s, sent++, payload, bytes);
    while (received < n) {
        receive_reply(s);
        received++;
        if (sent < n) send_request(s, sent++, payload, bytes);
    }
    double seconds = (now_us() - start) / 1e6;
    printf("{\"mode\":\"%s\",\"requests\":%d,\"window\":%d,\"payload_bytes\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"requests_per_second\":%.0f}\n", mode, n, window, bytes, samples[n / 2], samples[n * 99 / 100], n / seconds);
}

static int wake_a, wake_b;

static void *pong(void *unused) {
    uint64_t v;
    for (;;) {
        if (read(wake_a, &v, 8) != 8 || write(wake_b, &v, 8) != 8) return unused;
    }
}

static void wakeup(int n) {
    wake_a = eventfd(0, 0);
    wake_b = eventfd(0, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, pong, NULL);
    uint64_t v = 1;
    double start = now_us();
    for (int i = 0; i < n; i++) {
        if (write(wake_a, &v, 8) != 8 || read(wake_b, &v, 8) != 8) exit(1);
    }
    printf("{\"mode\":\"wakeup\",\"round_trips\":%d,\"round_trip_us\":%.1f}\n", n, (now_us() - start) / n);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bus-floor relay FRONTEND BACKEND | worker BACKEND | client ENDPOINT [N W BYTES] | raw [N W BYTES] | wakeup [N]\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    const char *mode = argv[1];
    if (!strcmp(mode, "relay") && argc == 4) relay(ctx, argv[2], argv[3]);
    else if (!strcmp(mode, "worker") && argc == 3) worker(ctx, argv[2]);
    else if (!strcmp(mode, "client") && argc >= 3) {
        client(ctx, argv[2], "c-relay", argc > 3 ? atoi(argv[3]) : 20000, argc > 4 ? atoi(argv[4]) : 32, argc > 5 ? atoi(argv[5]) : 64);
    } else if (!strcmp(mode, "raw")) {
        void *server = zmq_socket(ctx, ZMQ_ROUTER);
        check(zmq_bind(server, "tcp://127.0.0.1:*"), "bind");
        char endpoint[256];
        size_t size = sizeof endpoint;
        zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, endpoint, &size);
        pthread_t thread;
        pthread_create(&thread, NULL, echo_thread, server);
        client(ctx, endpoint, "c-raw", argc > 2 ? atoi(argv[2]) : 20000, argc > 3 ? atoi(argv[3]) : 32, argc > 4 ? atoi(argv[4]) : 64);
    } else if (!strcmp(mode, "wakeup")) wakeup(argc > 2 ? atoi(argv[2]) : 20000);
    else {
        fprintf(stderr, "bus-floor: unknown mode or wrong arguments: %s\n", mode);
        return 2;
    }
    fflush(stdout);
    _exit(0); /* echo threads still hold sockets: leave without terminating the context */
}
