/* Declarations shared by the C files of the spawn executor. */
#ifndef ISOLATE_NATIVE_H
#define ISOLATE_NATIVE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "plan.h"

/* Run steps [first, plan->nsteps) in the cloned child.  Returns only when
 * a step failed, after reporting it; the caller then exits. */
void iso_run_steps(const struct iso_plan *plan, int first, int report_fd);

/* Become PID 1: start the workload at step `first`, reap and forward
 * signals until it ends, report its status and exit.  Never returns. */
__attribute__((noreturn))
void iso_init_main(const struct iso_plan *plan, int first, int report_fd);

/* Send one record on the report pipe (async-signal-safe). */
void iso_report(int fd, int kind, int step, int err, int value);

#endif
