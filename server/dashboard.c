/* The embedded dashboard page (dashboard.h). The bytes come from the
 * generated $(BUILD)/gen/dashboard_html.c. */
#include "dashboard.h"

/* Defined in the generated file (not part of the public contract). */
extern const char dashboard__html[];
extern const size_t dashboard__html_len;

const char *dashboard_page(size_t *len) {
    *len = dashboard__html_len;
    return dashboard__html;
}
