/* Deterministic random numbers: a counter-free splitmix64 seeder feeding
 * xoshiro256**. Streams are pure functions of their seed words, so a task of
 * (run seed, stream, episode, slot) is the same on every machine. Not
 * thread-safe per object; objects are independent. */
#ifndef HD_RNG_H
#define HD_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4]; /* xoshiro256** state, never all zero */
} rng_t;

/* Seed from up to four words (hashed together with splitmix64). */
void rng_seed(rng_t *r, uint64_t a, uint64_t b, uint64_t c, uint64_t d);
/* Next 64 random bits. */
uint64_t rng_next(rng_t *r);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform(rng_t *r);
/* Uniform double in [lo, hi). */
double rng_range(rng_t *r, double lo, double hi);
/* Standard normal (Box-Muller, no cached second value, so that streams stay
 * a pure function of the number of calls). */
double rng_normal(rng_t *r);
/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t rng_below(rng_t *r, uint64_t n);

#endif
