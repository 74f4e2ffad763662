#include "reject.h"

#include <stdio.h>

#include "app.h"

static void on_summary(uv_timer_t *t)
{
    lh_reject_log_t *rl = t->data;
    char n[24];
    if (rl->suppressed == 0)
        return;
    snprintf(n, sizeof(n), "%llu", (unsigned long long)rl->suppressed);
    rl->suppressed = 0;
    lh_field_t f[] = {LH_FIELD_NUM("suppressed", n)};
    lh_log_fields(LH_WARN, "suppressed rejected lines", f, 1);
}

/* 1: the line may be written. Tokens come back with the loop's time. */
static int take_token(lh_reject_log_t *rl, uint64_t now)
{
    if (!rl->started) {
        rl->tokens = LH_REJECT_LOG_BURST;
        rl->started = 1;
    } else if (now > rl->counted_at) {
        rl->tokens += (double)(now - rl->counted_at) * LH_REJECT_LOG_RATE / 1000.0;
        if (rl->tokens > LH_REJECT_LOG_BURST)
            rl->tokens = LH_REJECT_LOG_BURST;
    }
    rl->counted_at = now;
    if (rl->tokens < 1)
        return 0;
    rl->tokens -= 1;
    return 1;
}

void lh_reject_log(lh_app_t *app, const lh_field_t *f, size_t n)
{
    lh_reject_log_t *rl = &app->reject_log;
    if (!lh_log_enabled(LH_WARN))
        return;
    if (app->loop == NULL || take_token(rl, uv_now(app->loop))) {
        lh_log_fields(LH_WARN, "rejected", f, n);
        return;
    }
    if (!rl->timer_ready) {
        if (uv_timer_init(app->loop, &rl->timer) != 0) { /* cannot happen: written then */
            lh_log_fields(LH_WARN, "rejected", f, n);
            return;
        }
        rl->timer.data = rl;
        uv_unref((uv_handle_t *)&rl->timer); /* never what keeps the loop running */
        rl->timer_ready = 1;
    }
    if (uv_is_closing((uv_handle_t *)&rl->timer))
        return; /* shutting down: counted in /metrics, no line */
    rl->suppressed++;
    if (!uv_is_active((uv_handle_t *)&rl->timer))
        uv_timer_start(&rl->timer, on_summary, 1000, 0);
}
