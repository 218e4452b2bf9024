/* LinearEstimation of theta (ALGORITHM.md section 4): least squares through
 * the origin of y on x, with sums that pool across tasks and workers. */
#ifndef HD_LINEST_H
#define HD_LINEST_H

typedef struct {
    double sxy; /* sum of x*y */
    double sxx; /* sum of x*x */
    double syy; /* sum of y*y (for the fit's R^2) */
    long n;     /* number of samples */
} linest_sums;

void linest_init(linest_sums *s);
void linest_add(linest_sums *s, double x, double y);
/* s += o (pooling: the fit of merged sums equals the fit of all samples). */
void linest_merge(linest_sums *s, const linest_sums *o);
/* theta = sxy / sxx; returns 0 and sets *theta, or -1 (theta untouched)
 * when there is no usable sample (sxx == 0 or not finite). */
int linest_fit(const linest_sums *s, double *theta);

#endif
