/* Run events: the poller that diffs engine observations into events, the
 * per-run rings and the SSE stream cursors (events.h). */
#include "events.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "log.h"
#include "srvutil.h"

#define EV_DATA_MAX 1024   /* one event's JSON */
#define EV_WINDOW 64       /* episodes observed per poll, from the oldest unsettled one */
#define EV_CLOSE_DELAY 1.0 /* seconds a finished run keeps producing events (late completes) */
#define EV_PEND_MAX 2048   /* one formatted SSE message */

typedef struct {
    uint64_t id;      /* 1, 2, ... per run */
    const char *type; /* static event name */
    char *data;       /* owned JSON text */
} ev_item;

typedef struct {
    int ended, has_val, has_test;
    long train_n, hg_n;
    double hg_sum;
} ev_rowsig;

typedef struct {
    ev_item ring[EVENTS_RING]; /* ring[(id - 1) % EVENTS_RING] holds event id */
    uint64_t next_id;          /* id of the next event */
    int closed;                /* run finished and its last events are in */
    int seen;                  /* 1 after the first observation (baseline) */
    double finished_at;        /* monotonic time the run was first seen finished, 0 = not */
    engine_obs last;           /* previous observation (poller thread only) */
    ev_rowsig *sig;            /* episodes 1..M (index m-1); poller thread only */
    int low;                   /* oldest episode whose end was not reported yet (poller only) */
    int nsig;
} ev_run;

struct events {
    engine_t *e;        /* borrowed */
    pthread_mutex_t mu; /* runs, rings, stop, counters */
    pthread_cond_t cv;  /* new events or stop */
    ev_run **runs;      /* index id-1; NULL until observed */
    int nruns;
    int stop;    /* 1 after events_shutdown */
    int started; /* poller thread running */
    pthread_t th;
    long streams;   /* open SSE streams */
    int n0;         /* runs that existed when the hub started (observed from their state then) */
    uint64_t total; /* events produced */
};

struct events_stream {
    events_t *ev;
    int64_t run;
    uint64_t next;          /* id of the next event to send */
    double hb;              /* heartbeat period, seconds */
    double last_send;       /* monotonic */
    char pend[EV_PEND_MAX]; /* formatted bytes not yet handed to MHD */
    size_t plen, poff;
};

/* ---- JSON text -------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t cap, len;
    int bad; /* 1 once truncated */
} jbuf;

static void jb_add(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_add(jbuf *b, const char *fmt, ...) {
    if (b->bad) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->bad = 1;
    else
        b->len += (size_t)n;
}

/* ,"name":value with null for a missing or non-finite number. */
static void jb_num(jbuf *b, const char *name, double v, int have) {
    if (have && isfinite(v))
        jb_add(b, ",\"%s\":%.10g", name, v);
    else
        jb_add(b, ",\"%s\":null", name);
}

static void state_data(const engine_obs *o, jbuf *b) {
    jb_add(b,
           "{\"run\":%lld,\"state\":\"%s\",\"phase\":\"%s\",\"finished\":%s,\"episode\":%d,"
           "\"episodes\":%d",
           (long long)o->id, o->state, o->phase, o->finished ? "true" : "false", o->episode,
           o->episodes);
    jb_add(b, ",\"step\":%d,\"steps\":%d,\"lam_version\":%lld,\"outer_steps\":%lld", o->step,
           o->steps, (long long)o->lam_version_head, (long long)o->outer_steps);
    jb_num(b, "theta", o->theta, 1);
    jb_num(b, "meta_val_loss", o->meta_val_loss, o->has_meta_val);
    jb_num(b, "meta_test_loss", o->meta_test_loss, o->has_meta_test);
    jb_add(b, ",\"workers\":%d,\"leases\":%d}", o->workers, o->leases);
}

/* ---- the poller ------------------------------------------------------------- */

static double mono(void) { return srvutil_mono(); }

/* Append an event (ev->mu held). The oldest is dropped when the ring is full. */
static void push(events_t *ev, ev_run *er, const char *type, const jbuf *b) {
    if (b->bad) return;
    char *d = malloc(b->len + 1);
    if (!d) return;
    memcpy(d, b->p, b->len + 1);
    ev_item *it = &er->ring[(er->next_id - 1) % EVENTS_RING];
    free(it->data);
    it->id = er->next_id++;
    it->type = type;
    it->data = d;
    ev->total++;
}

static ev_run *run_slot(events_t *ev, int64_t id) {
    if (id < 1) return NULL;
    if (id > ev->nruns) {
        int n = ev->nruns ? ev->nruns : 16;
        while (n < id) n *= 2;
        ev_run **nr = realloc(ev->runs, (size_t)n * sizeof *nr);
        if (!nr) return NULL;
        memset(nr + ev->nruns, 0, (size_t)(n - ev->nruns) * sizeof *nr);
        ev->runs = nr;
        ev->nruns = n;
    }
    if (!ev->runs[id - 1]) {
        ev_run *er = calloc(1, sizeof *er);
        if (!er) return NULL;
        er->next_id = 1;
        ev->runs[id - 1] = er;
    }
    return ev->runs[id - 1];
}

/* Diff one run's observation against the last one (ev->mu held). Returns
 * the number of events produced. */
static int diff_run(events_t *ev, ev_run *er, const engine_obs *o, const engine_obs_row *rows,
                    int nrows) {
    char tmp[EV_DATA_MAX];
    jbuf b;
    int made = 0;
    uint64_t before = er->next_id;
    if (!er->sig && o->episodes > 0) {
        er->sig = calloc((size_t)o->episodes, sizeof *er->sig);
        er->nsig = er->sig ? o->episodes : 0;
    }
    if (!er->seen && o->id > ev->n0) {
        /* Created after the hub started: everything it did is news. */
        er->seen = 1;
        er->low = 1;
        er->last = *o;
        er->last.state = "running";
        er->last.phase = "";
        er->last.outer_steps = 0;
        er->last.rounds = 0;
    } else if (!er->seen) {
        er->seen = 1;
        for (int i = 0; i < nrows; i++) {
            const engine_obs_row *w = &rows[i];
            if (w->episode > er->nsig) continue;
            er->sig[w->episode - 1] =
                (ev_rowsig){w->ended, w->has_val, w->has_test, w->train_n, w->hg_n, w->hg_sum};
        }
        er->last = *o;
        er->low = o->episode;
        if (o->finished) er->closed = 1;
        return 0;
    }
    const engine_obs *p = &er->last;
    /* step: outer updates since the last poll, with the mean norm of theirs */
    if (o->outer_steps > p->outer_steps) {
        long dn = 0;
        double ds = 0.0;
        for (int i = 0; i < nrows; i++) {
            const engine_obs_row *w = &rows[i];
            if (w->episode > er->nsig) continue;
            const ev_rowsig *s = &er->sig[w->episode - 1];
            if (w->hg_n > s->hg_n) {
                dn += w->hg_n - s->hg_n;
                ds += w->hg_sum - s->hg_sum;
            }
        }
        b = (jbuf){tmp, sizeof tmp, 0, 0};
        jb_add(&b, "{\"episode\":%d", o->episode);
        if (o->sync && o->applied_step > 0)
            jb_add(&b, ",\"step\":%d", o->applied_step);
        else
            jb_add(&b, ",\"step\":null");
        jb_add(&b, ",\"lam_version\":%lld,\"outer_step\":%lld,\"updates\":%lld",
               (long long)o->lam_version_head, (long long)o->outer_steps,
               (long long)(o->outer_steps - p->outer_steps));
        jb_num(&b, "hypergrad_norm", dn ? ds / (double)dn : 0.0, dn > 0);
        jb_add(&b, "}");
        push(ev, er, "step", &b);
    }
    /* theta: a new estimation round was fitted */
    if (o->rounds != p->rounds || (isfinite(o->theta) && o->theta != p->theta)) {
        b = (jbuf){tmp, sizeof tmp, 0, 0};
        jb_add(&b, "{\"episode\":%d,\"round\":%d", o->episode, o->rounds);
        jb_num(&b, "theta", o->theta, 1);
        jb_add(&b, "}");
        push(ev, er, "theta", &b);
    }
    /* episode and eval: per-episode rows that changed */
    for (int i = 0; i < nrows; i++) {
        const engine_obs_row *w = &rows[i];
        if (w->episode > er->nsig) continue;
        ev_rowsig *s = &er->sig[w->episode - 1];
        int changed = w->ended && (!s->ended || w->train_n != s->train_n ||
                                   w->has_val != s->has_val || w->has_test != s->has_test);
        if (changed) {
            b = (jbuf){tmp, sizeof tmp, 0, 0};
            jb_add(&b, "{\"episode\":%d", w->episode);
            jb_num(&b, "train_loss", w->train_loss, w->train_n > 0);
            jb_num(&b, "hypergrad_norm", w->hg_n ? w->hg_sum / (double)w->hg_n : 0.0, w->hg_n > 0);
            jb_num(&b, "val_loss", w->val_loss, w->has_val);
            jb_num(&b, "meta_test_loss", w->test_loss, w->has_test);
            jb_num(&b, "theta", w->theta, 1);
            jb_add(&b, ",\"lam_version\":%lld,\"updates\":%ld", (long long)w->lam_version, w->hg_n);
            jb_num(&b, "seconds", w->seconds, 1);
            jb_add(&b, "}");
            push(ev, er, "episode", &b);
        }
        for (int k = 0; k < 2; k++) {
            int had = k ? s->has_test : s->has_val, has = k ? w->has_test : w->has_val;
            if (!has || had) continue;
            b = (jbuf){tmp, sizeof tmp, 0, 0};
            jb_add(&b, "{\"episode\":%d,\"stream\":\"%s\"", w->episode, k ? "test" : "val");
            jb_num(&b, "loss", k ? w->test_loss : w->val_loss, 1);
            jb_add(&b, "}");
            push(ev, er, "eval", &b);
        }
        *s = (ev_rowsig){w->ended, w->has_val, w->has_test, w->train_n, w->hg_n, w->hg_sum};
        if (w->ended && w->episode == er->low) er->low++;
    }
    /* state: run state or phase changed */
    if (strcmp(o->state, p->state) != 0 || strcmp(o->phase, p->phase) != 0) {
        b = (jbuf){tmp, sizeof tmp, 0, 0};
        state_data(o, &b);
        push(ev, er, "state", &b);
    }
    er->last = *o;
    if (o->finished) {
        double now = mono();
        if (er->finished_at == 0.0)
            er->finished_at = now;
        else if (now - er->finished_at >= EV_CLOSE_DELAY)
            er->closed = 1;
    }
    made = (int)(er->next_id - before);
    return made + er->closed;
}

static void poll_once(events_t *ev) {
    int n = 0, active = 0;
    engine_counts(ev->e, &n, &active);
    engine_obs_row rows[EV_WINDOW];
    int woke = 0;
    for (int64_t id = 1; id <= n; id++) {
        pthread_mutex_lock(&ev->mu);
        ev_run *er = run_slot(ev, id);
        int skip = !er || er->closed;
        int seen = er && (er->seen || id > ev->n0);
        /* Late train losses of an episode arrive after it ended: look back
         * 3 episodes, and further to the oldest one not reported yet. */
        int first = er ? er->last.episode - 3 : 1;
        if (er && er->low < first) first = er->low;
        pthread_mutex_unlock(&ev->mu);
        if (skip) continue;
        engine_run *r = engine_run_find(ev->e, id);
        if (!r) continue;
        engine_obs o;
        if (!seen) {
            /* Baseline: the window around the current episode. */
            engine_run_observe(ev->e, r, 1, rows, 0, &o);
            first = o.episode - 3;
        }
        int nrows = engine_run_observe(ev->e, r, first < 1 ? 1 : first, rows, EV_WINDOW, &o);
        pthread_mutex_lock(&ev->mu);
        woke += diff_run(ev, er, &o, rows, nrows);
        pthread_mutex_unlock(&ev->mu);
    }
    if (woke) {
        pthread_mutex_lock(&ev->mu);
        pthread_cond_broadcast(&ev->cv);
        pthread_mutex_unlock(&ev->mu);
    }
}

static void deadline_in(struct timespec *ts, double seconds) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    long ns = ts->tv_nsec + (long)(seconds * 1e9);
    ts->tv_sec += ns / 1000000000L;
    ts->tv_nsec = ns % 1000000000L;
}

static void *poller_main(void *arg) {
    events_t *ev = arg;
    pthread_mutex_lock(&ev->mu);
    while (!ev->stop) {
        pthread_mutex_unlock(&ev->mu);
        poll_once(ev);
        pthread_mutex_lock(&ev->mu);
        struct timespec ts;
        deadline_in(&ts, EVENTS_POLL_MS * 1e-3);
        while (!ev->stop && pthread_cond_timedwait(&ev->cv, &ev->mu, &ts) == 0) {
            /* woken by our own broadcast or a stream: keep the period */
        }
    }
    pthread_mutex_unlock(&ev->mu);
    return NULL;
}

hd_rc events_start(engine_t *e, events_t **out, hd_err *err) {
    events_t *ev = calloc(1, sizeof *ev);
    if (!ev) return hd_err_set(err, HD_ENOMEM, "events: out of memory");
    ev->e = e;
    int active;
    engine_counts(e, &ev->n0, &active);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&ev->th, NULL, poller_main, ev) != 0) {
        pthread_cond_destroy(&ev->cv);
        pthread_mutex_destroy(&ev->mu);
        free(ev);
        return hd_err_set(err, HD_EINTERNAL, "events: cannot start the poller thread");
    }
    ev->started = 1;
    *out = ev;
    return HD_OK;
}

void events_shutdown(events_t *ev) {
    if (!ev) return;
    pthread_mutex_lock(&ev->mu);
    ev->stop = 1;
    pthread_cond_broadcast(&ev->cv);
    pthread_mutex_unlock(&ev->mu);
}

void events_free(events_t *ev) {
    if (!ev) return;
    events_shutdown(ev);
    if (ev->started) pthread_join(ev->th, NULL);
    HD_ASSERT(ev->streams == 0);
    for (int i = 0; i < ev->nruns; i++) {
        ev_run *er = ev->runs[i];
        if (!er) continue;
        for (int k = 0; k < EVENTS_RING; k++) free(er->ring[k].data);
        free(er->sig);
        free(er);
    }
    free(ev->runs);
    pthread_cond_destroy(&ev->cv);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

void events_stats(events_t *ev, long *streams, uint64_t *events_total) {
    pthread_mutex_lock(&ev->mu);
    *streams = ev->streams;
    *events_total = ev->total;
    pthread_mutex_unlock(&ev->mu);
}

/* ---- streams ---------------------------------------------------------------- */

events_stream *events_stream_new(events_t *ev, engine_run *run, int64_t last_event_id,
                                 double heartbeat_s) {
    events_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ev = ev;
    s->run = engine_run_id(run);
    s->hb = heartbeat_s;
    s->last_send = mono();
    engine_obs o;
    engine_obs_row row;
    engine_run_observe(ev->e, run, 1, &row, 0, &o);
    char tmp[EV_DATA_MAX];
    jbuf b = {tmp, sizeof tmp, 0, 0};
    state_data(&o, &b);
    int n = snprintf(s->pend, sizeof s->pend, "retry: 3000\n\nevent: state\ndata: %s\n\n",
                     b.bad ? "{}" : tmp);
    s->plen = n > 0 && (size_t)n < sizeof s->pend ? (size_t)n : 0;
    pthread_mutex_lock(&ev->mu);
    ev_run *er = run_slot(ev, s->run);
    uint64_t next_id = er ? er->next_id : 1;
    if (last_event_id >= 0 && (uint64_t)last_event_id < next_id)
        s->next = (uint64_t)last_event_id + 1;
    else
        s->next = next_id;
    ev->streams++;
    pthread_mutex_unlock(&ev->mu);
    return s;
}

void events_stream_free(void *stream) {
    events_stream *s = stream;
    if (!s) return;
    pthread_mutex_lock(&s->ev->mu);
    s->ev->streams--;
    pthread_mutex_unlock(&s->ev->mu);
    free(s);
}

/* Format the next message into s->pend (ev->mu held). Returns 1 when there
 * is one, 0 when there is nothing now, -1 at the end of the stream. */
static int next_message(events_stream *s, double now) {
    events_t *ev = s->ev;
    if (ev->stop) return -1;
    ev_run *er = s->run <= ev->nruns ? ev->runs[s->run - 1] : NULL;
    if (er && s->next < er->next_id) {
        uint64_t oldest = er->next_id > EVENTS_RING ? er->next_id - EVENTS_RING : 1;
        int skipped = 0;
        if (s->next < oldest) {
            skipped = 1;
            s->next = oldest;
        }
        const ev_item *it = &er->ring[(s->next - 1) % EVENTS_RING];
        int n = snprintf(s->pend, sizeof s->pend, "%sid: %llu\nevent: %s\ndata: %s\n\n",
                         skipped ? ": events were dropped (ring full)\n" : "",
                         (unsigned long long)it->id, it->type, it->data);
        s->next++;
        s->plen = n > 0 && (size_t)n < sizeof s->pend ? (size_t)n : 0;
        s->poff = 0;
        return 1;
    }
    if (er && er->closed) return -1;
    if (now - s->last_send >= s->hb) {
        s->plen = (size_t)snprintf(s->pend, sizeof s->pend, ": heartbeat\n\n");
        s->poff = 0;
        return 1;
    }
    return 0;
}

long events_stream_read(void *stream, uint64_t pos, char *buf, size_t max) {
    events_stream *s = stream;
    events_t *ev = s->ev;
    (void)pos;
    if (s->poff >= s->plen) {
        pthread_mutex_lock(&ev->mu);
        double now = mono(), until = now + EVENTS_WAIT_MS * 1e-3;
        int got;
        while ((got = next_message(s, now)) == 0 && now < until) {
            double wake = s->last_send + s->hb;
            struct timespec ts;
            deadline_in(&ts, (wake < until ? wake : until) - now + 1e-3);
            pthread_cond_timedwait(&ev->cv, &ev->mu, &ts);
            now = mono();
        }
        pthread_mutex_unlock(&ev->mu);
        if (got < 0) return HTTP_STREAM_END;
        if (got == 0) return 0;
        s->last_send = now;
    }
    size_t n = s->plen - s->poff;
    if (n > max) n = max;
    memcpy(buf, s->pend + s->poff, n);
    s->poff += n;
    return (long)n;
}
