#include "actions.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* What Label Studio's code sends (labelstudio/FACTS.md), Enterprise's REVIEW_* included. */
static const char *const real[] = {
    "PROJECT_CREATED",     "PROJECT_UPDATED",    "PROJECT_DELETED",    "TASKS_CREATED",
    "TASKS_DELETED",       "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED",
    "ANNOTATIONS_DELETED", "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED",
    "REVIEW_CREATED",      "REVIEW_UPDATED",     "REVIEWS_DELETED",    "START_TRAINING",
};

#define NREAL (sizeof(real) / sizeof(real[0]))

/* In Label Studio's docs, never sent by its code: each with what arrives instead. */
static const struct {
    const char *name, *why;
} docs_only[] = {
    {"TASK_CREATED", "an import sends one TASKS_CREATED whose 'tasks' is a list"},
    {"TASK_DELETED", "deleting tasks sends TASKS_DELETED with a list of ids"},
    {"ANNOTATION_DELETED", "deleting annotations sends ANNOTATIONS_DELETED with a list of ids"},
};

int lh_actions_known(const char *action)
{
    if (strcmp(action, "*") == 0)
        return 1;
    for (size_t i = 0; i < NREAL; i++)
        if (strcmp(real[i], action) == 0)
            return 1;
    return 0;
}

size_t lh_actions_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= 64 || lb >= 64)
        return 64;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            int same = toupper((unsigned char)a[i - 1]) == toupper((unsigned char)b[j - 1]);
            size_t best = diag + (same ? 0 : 1);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

int lh_actions_explain(const char *action, char *buf, size_t len)
{
    static const char silence[] =
        " (another sender's action? mark it: on(\"%s\", fn, { custom = true }))";
    size_t off;
    if (lh_actions_known(action))
        return 0;
    for (size_t i = 0; i < sizeof(docs_only) / sizeof(docs_only[0]); i++) {
        if (strcmp(docs_only[i].name, action) == 0) {
            off = (size_t)snprintf(buf, len,
                                   "Label Studio's docs mention '%s' but Label Studio never "
                                   "sends it: %s",
                                   action, docs_only[i].why);
            if (off < len)
                snprintf(buf + off, len - off, silence, action);
            return 1;
        }
    }
    size_t best = 0, bestd = (size_t)-1;
    for (size_t i = 0; i < NREAL; i++) {
        size_t d = lh_actions_distance(action, real[i]);
        if (d < bestd)
            best = i, bestd = d;
    }
    if (bestd <= strlen(action) / 3 + 1)
        off =
            (size_t)snprintf(buf, len, "Label Studio never sends '%s': did you mean %s?%s", action,
                             real[best], bestd == 0 ? " (action names are case-sensitive)" : "");
    else
        off = (size_t)snprintf(buf, len,
                               "Label Studio never sends '%s' (it sends PROJECT_*, TASKS_*, "
                               "ANNOTATION(S)_*, LABEL_LINK_*, REVIEW(S)_*, START_TRAINING)",
                               action);
    if (off < len)
        snprintf(buf + off, len - off, silence, action);
    return 1;
}
