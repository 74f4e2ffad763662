/*
** list — the one intrusive doubly linked list of luahook: a head pointer, and `prev`/`next`
** fields in each element. Connections, handler runs, timers and outbound requests use it.
*/
#ifndef LH_LIST_H
#define LH_LIST_H

/* Puts `x` first in the list that `head` (an lvalue) starts. */
#define LH_LIST_PUSH(head, x)                                                                      \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if ((head) != NULL)                                                                        \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)

/* Takes `x` out of the list that `head` starts; its links are cleared. */
#define LH_LIST_REMOVE(head, x)                                                                    \
    do {                                                                                           \
        if ((x)->prev != NULL)                                                                     \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next != NULL)                                                                     \
            (x)->next->prev = (x)->prev;                                                           \
        (x)->prev = (x)->next = NULL;                                                              \
    } while (0)

#endif
